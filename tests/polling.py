"""Poll for a condition instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; return that.

    Raises:
        AssertionError: not within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_s} s {what}")
        time.sleep(interval_s)
