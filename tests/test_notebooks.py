"""The notebooks execute top to bottom on tiny settings."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(notebook: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(ROOT / notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def test_synthetic_notebook_runs_the_study_then_plots(tmp_path, monkeypatch):
    results = tmp_path / "synthetic"
    nb = execute("Synthetic_Data.ipynb", {"IWSHIFT_SYNTHETIC_RESULTS": str(results), "IWSHIFT_QUICK": "1"},
                 monkeypatch)
    assert (results / "metrics.csv").exists() and (results / "manifest.json").exists()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 5
