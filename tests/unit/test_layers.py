"""The import rules of chalicelib (docs/architecture.md, "Layers"): a module imports only
from its own layer or the layers below it, and no two modules import each other, not
even through function-level imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"

#: Lowest first. A module belongs to the longest entry that names it or its package
#: (``chalicelib`` itself names only the package's ``__init__``).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("chalicelib", "chalicelib.settings", "chalicelib.errors", "chalicelib.jsonbody", "chalicelib.timefmt",
              "chalicelib.sweeps", "chalicelib.aws", "chalicelib.lazy")),
    ("adapters", ("chalicelib.db", "chalicelib.storage", "chalicelib.queue", "chalicelib.crypto",
                  "chalicelib.observability", "chalicelib.sqsbatch", "chalicelib.outbound")),
    ("domain", ("chalicelib.flux", "chalicelib.auth")),
    ("services", ("chalicelib.services", "chalicelib.jobs")),
    ("edge", ("chalicelib.http", "chalicelib.snapstart")),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "chalicelib"
            if (module == prefix or inside) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best


def imports_of(module: str) -> set[str]:
    """Every chalicelib module ``module`` imports, at any depth of its code."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("chalicelib"):
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module) and not (module == "chalicelib" or target.startswith(module + "."))
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    # a package's __init__ re-exporting its own submodules is not a cycle of behaviour
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_rules_can_fail() -> None:
    assert layer_of("chalicelib.observability") < layer_of("chalicelib.flux.keypool")
    assert layer_of("chalicelib.jobs.state") > layer_of("chalicelib.db.jobs")
    assert "chalicelib.flux.keypool" in GRAPH["chalicelib.flux.client"]
