"""The lease conditions of the item state machine, built once in chalicelib.jobs.state."""

from __future__ import annotations

from typing import Any

from chalicelib.db import JobItemModel
from chalicelib.jobs.state import ItemLease, expired_lease, lease_held


def render(condition: Any) -> str:
    """The condition as DynamoDB would get it, with names and values filled in."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    text = condition.serialize(names, values)
    for placeholder, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        (kind, raw), *_ = value.items()
        text = text.replace(placeholder, f"{kind}:{raw}")
    for name, placeholder in sorted(names.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(placeholder, name)
    return text


def test_an_expired_lease_is_the_same_token_past_its_time() -> None:
    item = JobItemModel("01JOB", "0000", status="running", lease_token="tok-a", lease_until=90.0)
    text = render(expired_lease(item, 100.0))
    assert "status = S:running" in text
    assert "lease_until < N:100.0" in text or "lease_until < N:100" in text
    assert "lease_token = S:tok-a" in text


def test_the_token_is_the_one_read_not_a_later_one() -> None:
    first = render(expired_lease(JobItemModel("01JOB", "0000", lease_token="tok-a"), 100.0))
    second = render(expired_lease(JobItemModel("01JOB", "0000", lease_token="tok-b"), 100.0))
    assert first != second and "tok-b" in second


def test_a_held_lease_is_running_with_our_token() -> None:
    item = JobItemModel("01JOB", "0000", status="running", lease_token="ours")
    text = render(lease_held(ItemLease(item=item, token="ours", previous="queued")))
    assert "status = S:running" in text and "lease_token = S:ours" in text
    assert "lease_until" not in text  # holding it does not depend on the clock
