import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the tests' own helpers (helpers.py)
sys.path.insert(1, str(HERE.parent / "benchmarks"))  # the kernels' checks (benchmarks/check_*.py)
