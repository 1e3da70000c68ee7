"""Unit tests: no servers, no network, milliseconds each. Every test here gets the
``unit`` marker (``pytest -m unit`` or ``make test-unit``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from this folder ``unit``."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unit tests call no AWS service: an accidental call goes to a closed loopback port
    (refused at once), never to AWS on the internet. Clients and PynamoDB connections made
    meanwhile are dropped afterwards, so later tests in the process build their own."""
    from chalicelib.aws import reset_clients
    from chalicelib.db.base import reset_connections
    from chalicelib.settings import get_settings

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    reset_clients()
    reset_connections()
    yield
    get_settings.cache_clear()
    reset_clients()
    reset_connections()
