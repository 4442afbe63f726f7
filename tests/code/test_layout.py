"""The house's rules, read from the code's own imports (docs/ARCHITECTURE.md draws them):
layers only import downwards, no import circle, one door per service, no Prefect in pipeline/."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# (module prefix, layer), most specific first; flows/ is the outer layer.
LAYERS = (("pipeline.errors", 0), ("pipeline.settings", 0), ("pipeline.config", 0),
          ("pipeline.warehouse", 1), ("pipeline.tracking", 1),
          ("pipeline.data", 2), ("pipeline.features", 2), ("pipeline.normalize", 2),
          ("pipeline.store", 2), ("pipeline.loader", 2),
          ("pipeline.evaluation", 3), ("pipeline.plots", 3),
          ("pipeline.models", 4), ("pipeline.losses", 4), ("pipeline.engine", 4), ("pipeline.train", 4),
          ("pipeline.anchors", 4),
          ("pipeline.grid", 5), ("pipeline.cell", 5), ("pipeline.report", 5),
          ("pipeline.champion", 5), ("pipeline.next_day", 5), ("pipeline.paper", 5), ("pipeline", 0),
          ("flows", 6))


def _modules() -> dict[str, Path]:
    out = {}
    for p in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("flows/*.py")]:
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


MODULES = _modules()


def _imports(path: Path) -> list[str]:
    """Every module this file imports, at the top or inside a function."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                    for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def _layer(module: str) -> int:
    return next(layer for prefix, layer in LAYERS if module == prefix or module.startswith(prefix + "."))


def _graph() -> dict[str, set[str]]:
    return {m: {d for d in _imports(p) if d in MODULES and d != m} for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for m in MODULES:
        assert _layer(m) is not None, m


def test_imports_only_point_down_the_layers():
    up = [(m, d) for m, deps in _graph().items() for d in deps
          if _layer(d) > _layer(m) and not d.startswith(m + ".")]   # a package may re-export its own
    assert not up, up


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1 and not (d.startswith(m + ".") or m.startswith(d + ".")):
                pytest.fail("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("library,door", [("mlflow", "pipeline.tracking"), ("prefect", None)])
def test_one_door_per_service(library, door):
    """MLflow is imported by pipeline/tracking.py alone; Prefect by nothing in pipeline/."""
    users = sorted(m for m, p in MODULES.items() if m.startswith("pipeline")
                   and any(i == library or i.startswith(library + ".") for i in _imports(p)))
    assert users == ([door] if door else []), users


def test_duckdb_is_opened_by_the_warehouse_door_only():
    openers = sorted(m for m, p in MODULES.items() if "duckdb.connect(" in p.read_text())
    assert openers == ["pipeline.warehouse"], openers


def test_no_private_name_crosses_a_module():
    crossing = [(m, node.module, a.name) for m, p in MODULES.items()
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module
                and node.module.split(".")[0] in ("pipeline", "flows")
                for a in node.names if a.name.startswith("_")]
    assert not crossing, crossing
