"""Shared pytest setup: each part of the local stack is a fixture plugin."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

KINDS = ("unit", "integration", "devstack", "infra", "browser")  # folders under tests/, and their markers

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.flux",
    "tests.fixtures.idp",
    "tests.fixtures.api",
    "tests.fixtures.worker",
    "tests.fixtures.scripted",
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


# The longest files, longest first: `make test` hands whole files to its workers in this order
# (pytest-xdist --dist loadfile), so no long file starts last while the other workers sit idle.
LONGEST_FILES_FIRST = (
    "test_flux_client.py",
    "test_worker.py",
    "test_openapi_contract.py",
    "test_archives.py",
    "test_web_client.py",
    "test_uploads.py",
    "test_packaging.py",
    "test_image_jobs.py",
    "test_video_jobs.py",
    "test_videos_web.py",
    "test_webhook_hardening.py",
    "test_videos.py",
    "test_own_keys.py",
    "test_shares_browser.py",
    "test_api_images.py",
    "test_uploads_web.py",
    "test_cleanup.py",
    "test_image_input_web.py",
    "test_video_contract.py",
    "test_devstack.py",
    "test_worker_sweep.py",
    "test_body_fuzz.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its kind (its folder under tests/) and run the longest files first."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    for item in items:
        kind = item.path.parent.name
        if kind in KINDS:
            item.add_marker(kind)
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise
