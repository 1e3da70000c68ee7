"""Lazy package exports: a package names what it exports, and each name is imported from
its submodule on first use (PEP 562 module ``__getattr__`` and ``__dir__``), so importing
the package, or one of its submodules, loads nothing else.

Example::

    # chalicelib/flux/__init__.py
    __getattr__, __dir__ = lazy_exports(__name__, {"FluxClient": "client", "KeyPool": "keypool"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for the names in ``homes``
    (``{name: submodule}``, the submodule relative to the package). ``__getattr__`` imports
    the submodule, caches the value in the package's namespace and returns it.

    Raises (from ``__getattr__``):
        AttributeError: the name is not in ``homes``.
    """

    def __getattr__(name: str) -> Any:
        module = homes.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(homes))

    return __getattr__, __dir__
