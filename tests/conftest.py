import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the tests' own helpers (helpers.py)
sys.path.insert(1, str(HERE.parent / "benchmarks"))  # the kernels' checks (benchmarks/check_*.py)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA or Triton (benchmarks/gpu_check.sh runs `pytest -m gpu` first)")


def pytest_collection_modifyitems(items):
    """Every test skipped without CUDA or Triton is a GPU test: `pytest -m gpu` runs them all."""
    import pytest

    for item in items:
        reasons = " ".join(str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif"))
        if "CUDA" in reasons or "Triton" in reasons:
            item.add_marker(pytest.mark.gpu)
