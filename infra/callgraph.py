"""Which code each Lambda function can run: a static call graph over ``app.py`` and
``chalicelib`` (AST only, nothing imported), so :mod:`infra.policy` can give each
function's role only what that function's code path needs.

Nodes are qualified names of definitions: ``chalicelib.services.jobs.submit`` (a
function), ``chalicelib.flux.keypool.KeyPool`` (a class),
``chalicelib.flux.keypool.KeyPool.acquire`` (a method), ``chalicelib.flux.keypool._POOL``
(a module-level variable). A node's *references* are the definitions its body names:

- ``f(...)``, ``f`` passed as a callback, ``module.f``, ``module.Class.method``, through
  ``import``/``from ... import`` anywhere in the module (also inside functions), and
  through a package's re-exports (``from chalicelib.db import JobModel``);
- ``self.m`` / ``cls.m`` inside a class: that class's method ``m``;
- a class: every method of it and its class body (bases, class attributes), since a
  method call on an instance (``pool.acquire()``) cannot be resolved without types;
- a module-level variable: the definitions its value names (``_POOL = KeyPool()``).

Nested functions and lambdas belong to the definition that contains them. The graph
over-approximates (a referenced class brings all its methods): a role may get an action
its function never uses on some input, never lack one it can use through named code.
Code reached only through ``getattr`` with a computed name or ``importlib`` is not
seen; the package has none (``tests/test_policy.py`` checks every AWS call is reached).

:func:`reachable` answers "what can this function run"; :func:`attributes` and
:func:`definitions` what those definitions name (``settings.jobs_queue_name``, a model
class), which is how a function's *resources* are derived.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chalicelib",)
APP_MODULE = "app"


@dataclass
class Definition:
    """One node: ``kind`` is ``function``, ``class``, ``variable`` or ``module`` (a module's
    top-level statements, named ``<module>:<dotted>``); ``refs`` the qualified
    names it references; ``attrs`` every attribute name its body reads (``x.attr``)."""

    name: str
    kind: str
    node: ast.AST
    module: str
    refs: set[str] = field(default_factory=set)
    attrs: set[str] = field(default_factory=set)
    span: tuple[int, int] = (0, 0)


@dataclass
class Module:
    """A parsed module: its dotted ``name``, ``path`` (relative to the root), AST and the
    names bound by its imports and top-level definitions (local name -> qualified name
    or ``module:<dotted>``)."""

    name: str
    path: str
    tree: ast.Module
    symbols: dict[str, str] = field(default_factory=dict)


class Graph:
    """The call graph of ``app.py`` plus the packages in :data:`PACKAGES` under ``root``."""

    def __init__(self, root: Path = ROOT, sources: dict[str, str] | None = None) -> None:
        """Parse the code. ``sources`` (module name -> source) replaces reading ``root``
        (tests use it for small samples).

        Raises:
            SyntaxError: a module does not parse.
        """
        self.modules: dict[str, Module] = {}
        self.defs: dict[str, Definition] = {}
        if sources is None:
            sources = {}
            paths = [root / "app.py"] + [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
            for path in paths:
                if path.exists():
                    sources[_module_name(path.relative_to(root))] = path.read_text(encoding="utf-8")
        for name, source in sources.items():
            path = name.replace(".", "/") + ".py"
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
            self.modules[name] = Module(name, path, ast.parse(source, filename=path))
        for module in self.modules.values():
            self._bind(module)
        for definition in self.defs.values():
            self._collect(definition)

    # -- building ---------------------------------------------------------------------------------

    def _bind(self, module: Module) -> None:
        """Top-level definitions and every import of ``module`` into its symbol table."""
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        module.symbols[alias.asname] = "module:" + alias.name
                    else:
                        head = alias.name.split(".")[0]
                        module.symbols.setdefault(head, "module:" + head)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    module.symbols[alias.asname or alias.name] = f"from:{node.module}:{alias.name}"
        top_level = [
            node
            for node in module.tree.body
            if not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Assign | ast.AnnAssign | ast.Import
            )
            and not isinstance(node, ast.ImportFrom)
        ]
        if top_level:  # statements run at import (``observability.configure(app)``): one node per module
            qual = f"<module>:{module.name}"
            self.defs[qual] = Definition(qual, "module", ast.Module(body=top_level, type_ignores=[]), module.name)
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self._add(module, f"{module.name}.{node.name}", "function", node)
                module.symbols[node.name] = f"{module.name}.{node.name}"
            elif isinstance(node, ast.ClassDef):
                qual = f"{module.name}.{node.name}"
                self._add(module, qual, "class", node)
                module.symbols[node.name] = qual
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        self._add(module, f"{qual}.{item.name}", "function", item)
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            qual = f"{module.name}.{name.id}"
                            self._add(module, qual, "variable", node.value)
                            module.symbols[name.id] = qual

    def _add(self, module: Module, qual: str, kind: str, node: ast.AST) -> None:
        span = (getattr(node, "lineno", 0), getattr(node, "end_lineno", 0))
        self.defs[qual] = Definition(qual, kind, node, module.name, span=span)

    def resolve_symbol(self, module_name: str, name: str, seen: frozenset[str] = frozenset()) -> str | None:
        """What ``name`` means in module ``module_name``: a definition's qualified name,
        ``module:<dotted>`` for a module of ours, or None (not ours)."""
        key = f"{module_name}:{name}"
        if key in seen:
            return None
        module = self.modules.get(module_name)
        target = module.symbols.get(name) if module else None
        if target is None:
            return f"module:{module_name}.{name}" if f"{module_name}.{name}" in self.modules else None
        if target.startswith("from:"):
            _, source, attr = target.split(":", 2)
            if f"{source}.{attr}" in self.modules:
                return f"module:{source}.{attr}"
            if source not in self.modules:
                return None
            return self.resolve_symbol(source, attr, seen | {key})
        if target.startswith("module:"):
            return target if target[len("module:") :] in self.modules else None
        return target

    def _resolve(self, node: ast.expr, module: str, cls: str | None) -> str | None:
        """The definition or module an expression names (``f``, ``mod.f``, ``self.m``)."""
        if isinstance(node, ast.Name):
            if node.id in ("self", "cls") and cls:
                return "class:" + cls
            return self.resolve_symbol(module, node.id)
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value, module, cls)
            if base is None:
                return None
            if base.startswith("module:"):
                return self.resolve_symbol(base[len("module:") :], node.attr)
            if base.startswith("class:"):
                qual = f"{base[len('class:') :]}.{node.attr}"
                return qual if qual in self.defs else None
            definition = self.defs.get(base)
            if definition is not None and definition.kind == "class":
                qual = f"{base}.{node.attr}"
                return qual if qual in self.defs else base
            return base
        return None

    def _collect(self, definition: Definition) -> None:
        """Fill ``refs`` and ``attrs`` of one definition from its body."""
        parts = definition.name[len(definition.module) + 1 :].split(".")
        in_class = definition.kind == "class" or (definition.kind == "function" and len(parts) == 2)
        cls = f"{definition.module}.{parts[0]}" if in_class else None
        if definition.kind == "class":
            assert isinstance(definition.node, ast.ClassDef)
            for item in definition.node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    definition.refs.add(f"{definition.name}.{item.name}")
            roots: list[ast.AST] = [
                n for n in definition.node.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            roots += definition.node.bases + definition.node.decorator_list
        else:
            roots = [definition.node]
        stack = list(roots)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Attribute):
                definition.attrs.add(node.attr)
            if isinstance(node, ast.Name | ast.Attribute):
                target = self._resolve(node, definition.module, cls)
                if target and target in self.defs and target != definition.name:
                    definition.refs.add(target)
                    if isinstance(node, ast.Attribute):  # resolved as a whole: its parts name nothing more
                        definition.attrs.update(n.attr for n in ast.walk(node.value) if isinstance(n, ast.Attribute))
                        continue
            stack.extend(ast.iter_child_nodes(node))

    # -- queries ----------------------------------------------------------------------------------

    def reachable(self, roots: Iterable[str]) -> set[str]:
        """Every definition reachable from ``roots`` (qualified names), roots included.

        Raises:
            KeyError: a root that is not a definition.
        """
        seen: set[str] = set()
        stack = list(roots)
        for root in stack:
            if root not in self.defs:
                raise KeyError(root)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(self.defs[name].refs - seen)
        return seen

    def attributes(self, defs: Iterable[str]) -> set[str]:
        """Every attribute name read in ``defs`` (``settings.images_bucket`` -> ``images_bucket``)."""
        return {attr for name in defs for attr in self.defs[name].attrs}

    def import_time(self) -> set[str]:
        """The ``<module>:<name>`` nodes: top-level statements other than definitions,
        assignments and imports, which every function runs when it imports the code."""
        return {name for name, definition in self.defs.items() if definition.kind == "module"}

    def scope_of(self, module: str, line: int) -> str:
        """The definition a line of ``module`` belongs to: the method, else the top-level
        function or class, else the module variable; ``<module>:<name>`` for other top-level code."""
        best: Definition | None = None
        for definition in self.defs.values():
            if definition.module != module or definition.kind in ("variable", "module"):
                continue
            start, end = definition.span
            if start <= line <= end and (best is None or start >= best.span[0]):
                best = definition
        if best is None:
            for definition in self.defs.values():
                start, end = definition.span
                if definition.module == module and definition.kind == "variable" and start <= line <= end:
                    return definition.name
            return f"<module>:{module}"
        return best.name


def _module_name(relative: Path) -> str:
    """``chalicelib/services/jobs.py`` -> ``chalicelib.services.jobs`` (``__init__`` kept)."""
    return ".".join(relative.with_suffix("").parts)


@cache
def graph() -> Graph:
    """The project's graph (parsed once per process)."""
    return Graph()


def module_of(path: str) -> str:
    """The module name of a path relative to the root (``chalicelib/db/__init__.py`` -> ``chalicelib.db``)."""
    name = _module_name(Path(path))
    return name[: -len(".__init__")] if name.endswith(".__init__") else name
