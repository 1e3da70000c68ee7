"""Shared pytest setup: each part of the local stack is a fixture plugin."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.flux",
    "tests.fixtures.idp",
    "tests.fixtures.api",
    "tests.fixtures.worker",
]


@pytest.fixture(scope="module")
def deploy_script() -> Any:
    """``scripts/deploy.py`` loaded as a module (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "deploy_script", Path(__file__).parent.parent / "scripts" / "deploy.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
