"""Shared pytest setup: each part of the local stack is a fixture plugin."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.flux",
    "tests.fixtures.idp",
    "tests.fixtures.api",
    "tests.fixtures.worker",
]
