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
    runs = [p for p in results.iterdir() if (p / "config.json").exists()]
    assert runs and all((p / "metrics.csv").exists() and (p / "params.npz").exists() for p in runs)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 5


def test_cifar_visualization_notebook_plots_a_tiny_results_folder(tmp_path, monkeypatch):
    from helpers import fake_cifar, tiny_binary, train

    data = fake_cifar(train_per_class=16, test_per_class=4)
    common = dict(per_class=16, seeds=[0, 1], other_eval=8, noise_eval=4, weights=[0.5, 1.0, 2.0], ratios=[0.5, 2.0],
                  regimes=["none", "l2"], precision="auto")
    for setting in ("weighting", "imbalance"):
        train(tiny_binary(setting=setting, **common), data, tmp_path)
    nb = execute("CIFAR10_visualization.ipynb", {"IWSHIFT_CIFAR_RESULTS": str(tmp_path)}, monkeypatch)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 4


@pytest.mark.parametrize("notebook, variable, folder, least_figures", [
    ("Synthetic_Data.ipynb", "IWSHIFT_SYNTHETIC_RESULTS", "synthetic", 5),
    ("CIFAR10_visualization.ipynb", "IWSHIFT_CIFAR_RESULTS", "cifar_binary", 4)])
def test_notebooks_plot_the_committed_results(notebook, variable, folder, least_figures, monkeypatch):
    results = ROOT / "paper-results" / folder
    assert results.is_dir(), f"no committed results in {results}"
    nb = execute(notebook, {variable: str(results)}, monkeypatch)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= least_figures
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"paper-results/{folder}" in text and str(ROOT) not in text  # read the committed results, shown relatively
