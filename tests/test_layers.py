"""The package's layers (docs/architecture.md): no import cycle, lazy imports included; no module imports
one above its layer; the launcher knows no study."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "iwshift"

# Bottom to top, as docs/architecture.md draws them; a module may import only from its own layer or below.
LAYERS: list[set[str]] = [
    {"checks", "stats", "results", "health", "data", "readme", "kernels", "kernels.counter",
     "kernels.triton_conv", "kernels.triton_sgd"},
    {"losses", "weights", "plots", "config", "kernels.sgd2d"},
    {"cli", "shifts", "models", "cifar_data", "metrics"},
    {"train", "train.runs", "train.inputs", "train.optimizer", "train.capture", "train.fused",
     "train.trainer", "train.side_by_side", "train.fit", "launch", "plan"},
    {"sweep"},
    {"cnn", "synthetic"},
    {"cifar_binary", "cifar_extension", "wang2022"},
    {"report", "report.load", "report.claims", "report.figures", "report.render", "report.__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every iwshift module that ``path`` imports anywhere (module level or inside a function)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("iwshift")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                stem = ".".join(["iwshift", *base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("iwshift"):
                stem = node.module
            else:
                continue
            found.add(stem)
            found |= {f"{stem}.{alias.name}" for alias in node.names}
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m.removeprefix("iwshift.") for m in found if m.removeprefix("iwshift.") in known} - {name, ""}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py") if module_name(p)}


def test_every_module_has_a_layer():
    placed = set().union(*LAYERS)
    assert set(graph()) - placed == set(), "add the new module to LAYERS and to docs/architecture.md"


def test_no_module_imports_one_above_its_layer():
    layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
    upward = [(m, d) for m, deps in graph().items() for d in deps if layer[d] > layer[m]]
    assert upward == []


def test_no_import_cycle_lazy_imports_included():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == "open":
                return path + [module, dep]
            if dep not in state and (cycle := visit(dep, path + [module])):
                return cycle
        state[module] = "done"
        return None

    # A package's __init__ hands names on from its own modules; the package -> module arrow is not a cycle.
    for module, deps in edges.items():
        edges[module] = {d for d in deps if not d.startswith(module + ".")}
    cycles = [c for m in sorted(edges) if m not in state and (c := visit(m, []))]
    assert cycles == []


def test_the_launcher_names_no_study():
    text = (PACKAGE / "launch.py").read_text()
    assert not {"cifar_binary", "cifar_extension", "wang2022", "synthetic"} & imports(PACKAGE / "launch.py")
    for study in ("covariate", "imbalance", "weighting", "bbse", "kliep"):
        assert study not in text
