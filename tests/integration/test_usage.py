"""Rate limits and the monthly quota in one conditional UpdateItem (``services.usage.admit``),
against the local stack's moto server; ``POST /v1/images`` through the in-process app."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from chalicelib.aws import counting_calls
from chalicelib.errors import DomainError
from chalicelib.settings import get_settings
from devstack.prompts import first

SMALL = {"width": 256, "height": 256}


def configure(monkeypatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def minute() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")


def in_one_minute(scenario) -> object:
    """Run ``scenario(attempt)`` until one run starts and ends in the same UTC minute (a
    fixed-window rate limit starts over at the minute); its result."""
    for attempt in range(3):
        started = minute()
        result = scenario(attempt)
        if minute() == started:
            return result
    pytest.fail("three runs crossed a minute boundary")


def counters(user: str) -> dict[str, int | str | None]:
    from chalicelib.db import UsageModel

    item = UsageModel.get(user, datetime.now(UTC).strftime("%Y-%m"), consistent_read=True)
    return {
        "images": int(item.count or 0),
        "window": item.window,
        "writes": int(item.writes or 0),
        "generations": int(item.generations or 0),
    }


def test_a_warm_admit_is_one_conditional_update_item(app_env, monkeypatch):
    from chalicelib.services import usage

    configure(monkeypatch, MONTHLY_IMAGE_QUOTA="50", RATE_LIMIT_PER_MINUTE="50", MUTATION_RATE_LIMIT_PER_MINUTE="50")

    def scenario(attempt: int) -> dict:
        user = f"one-write-{attempt}"
        usage.admit(user, write=True, generation=True, images=2)  # first in its minute: may read
        with counting_calls() as calls:
            usage.admit(user, write=True, generation=True, images=3)
        return {"calls": dict(calls), "counters": counters(user)}

    seen = in_one_minute(scenario)
    assert seen["calls"] == {"dynamodb.UpdateItem": 1}
    assert seen["counters"] == {"images": 5, "window": minute(), "writes": 2, "generations": 2}


def test_a_counter_update_asks_for_nothing_back_and_leaves_the_instance_as_it_was(app_env):
    from pynamodb.exceptions import UpdateError

    from chalicelib.db import UsageModel

    answers: list[dict] = []

    def keep(parsed: dict, **_kwargs: object) -> None:
        answers.append(parsed)

    events = UsageModel._get_connection().connection.client.meta.events
    events.register("after-call.dynamodb.UpdateItem", keep)
    try:
        item = UsageModel("nothing-back", "2026-12")
        item.update_no_return([UsageModel.count.add(2)])
        item.update_no_return([UsageModel.count.add(3)], UsageModel.count >= 2)
        with pytest.raises(UpdateError):
            item.update_no_return([UsageModel.count.add(1)], UsageModel.count > 100)
        assert item.count == 0  # as made: nothing was read back
        item.update([UsageModel.count.add(0)])  # the ordinary update reads the item back
    finally:
        events.unregister("after-call.dynamodb.UpdateItem", keep)
    sent_back = [("Error" in answer, "Attributes" in answer) for answer in answers]
    assert sent_back == [(False, False), (False, False), (True, False), (False, True)]
    assert item.count == 5
    with pytest.raises(TypeError):
        item.update_no_return([])


def test_refusals_count_what_separate_checks_would(app_env, monkeypatch):
    from chalicelib.services import usage

    def scenario(attempt: int) -> dict:
        got = {}
        # the quota: both requests counted, no images
        configure(monkeypatch, MONTHLY_IMAGE_QUOTA="3", RATE_LIMIT_PER_MINUTE="10", MUTATION_RATE_LIMIT_PER_MINUTE="10")
        user = f"quota-{attempt}"
        usage.admit(user, write=True, generation=True, images=2)
        with pytest.raises(DomainError) as over:
            usage.admit(user, write=True, generation=True, images=2)
        got["quota"] = (over.value.code.value, counters(user))
        with pytest.raises(DomainError) as whole:  # more than the whole quota
            usage.admit(f"greedy-{attempt}", write=True, generation=True, images=4)
        got["greedy"] = (whole.value.code.value, counters(f"greedy-{attempt}"))
        # the generation limit: the write counted, nothing else
        configure(monkeypatch, MONTHLY_IMAGE_QUOTA="100", RATE_LIMIT_PER_MINUTE="1")
        user = f"gen-{attempt}"
        usage.admit(user, write=True, generation=True, images=1)
        with pytest.raises(DomainError) as limited:
            usage.admit(user, write=True, generation=True, images=1)
        got["generation"] = (limited.value.code.value, limited.value.retry_after_s, counters(user))
        # the write limit: nothing counted
        configure(monkeypatch, RATE_LIMIT_PER_MINUTE="10", MUTATION_RATE_LIMIT_PER_MINUTE="1")
        user = f"write-{attempt}"
        usage.admit(user, write=True, generation=True, images=1)
        with pytest.raises(DomainError) as writes:
            usage.admit(user, write=True, generation=True, images=1)
        got["write"] = (writes.value.code.value, counters(user))
        return got

    got = in_one_minute(scenario)
    now = minute()
    assert got["quota"] == ("quota-exceeded", {"images": 2, "window": now, "writes": 2, "generations": 2})
    assert got["greedy"] == ("quota-exceeded", {"images": 0, "window": now, "writes": 1, "generations": 1})
    code, retry_after, seen = got["generation"]
    assert code == "rate-limited" and 1 <= retry_after <= 60
    assert seen == {"images": 1, "window": now, "writes": 2, "generations": 1}
    assert got["write"] == ("rate-limited", {"images": 1, "window": now, "writes": 1, "generations": 1})


def test_a_new_minute_starts_the_windows_over_and_keeps_the_quota(app_env, monkeypatch):
    from chalicelib.db import UsageModel
    from chalicelib.services import usage

    configure(monkeypatch, MONTHLY_IMAGE_QUOTA="10", RATE_LIMIT_PER_MINUTE="1", MUTATION_RATE_LIMIT_PER_MINUTE="1")
    user = "next-minute"
    period = datetime.now(UTC).strftime("%Y-%m")
    # what an earlier minute left: both windows full, four images charged
    UsageModel(user, period, count=4, window="2000-01-01T00:00", writes=1, generations=1).save()
    usage._window_hint[user] = "2000-01-01T00:00"  # this instance saw that minute too

    def scenario(_attempt: int) -> dict:
        usage.admit(user, write=True, generation=True, images=1)
        return counters(user)

    seen = in_one_minute(scenario)
    assert seen["window"] == minute() and seen["writes"] == 1 and seen["generations"] == 1
    assert seen["images"] in (5, 6, 7)  # one image per run (a rerun after a minute boundary adds one)


def test_concurrent_admits_never_overshoot(app_env, monkeypatch):
    from chalicelib.services import usage

    def race(user: str, n: int) -> tuple[int, list[str]]:
        def one(_i: int) -> str:
            try:
                usage.admit(user, write=True, generation=True, images=1)
                return "ok"
            except DomainError as exc:
                return exc.code.value

        with ThreadPoolExecutor(max_workers=n) as pool:
            outcomes = list(pool.map(one, range(n)))
        return outcomes.count("ok"), outcomes

    def scenario(attempt: int) -> dict:
        limits = {"RATE_LIMIT_PER_MINUTE": "100", "MUTATION_RATE_LIMIT_PER_MINUTE": "100"}
        configure(monkeypatch, MONTHLY_IMAGE_QUOTA="4", **limits)
        quota_ok, quota_outcomes = race(f"race-quota-{attempt}", 8)
        quota_counters = counters(f"race-quota-{attempt}")
        configure(monkeypatch, MONTHLY_IMAGE_QUOTA="100", RATE_LIMIT_PER_MINUTE="3")
        rate_ok, rate_outcomes = race(f"race-rate-{attempt}", 8)
        return {
            "quota": (quota_ok, sorted(set(quota_outcomes)), quota_counters),
            "rate": (rate_ok, sorted(set(rate_outcomes)), counters(f"race-rate-{attempt}")),
        }

    got = in_one_minute(scenario)
    ok, outcomes, seen = got["quota"]
    assert ok == 4 and outcomes == ["ok", "quota-exceeded"]
    assert seen["images"] == 4 and seen["writes"] == 8 and seen["generations"] == 8
    ok, outcomes, seen = got["rate"]
    assert ok == 3 and outcomes == ["ok", "rate-limited"]
    assert seen["images"] == 3 and seen["generations"] == 3 and seen["writes"] == 8


def test_post_images_counts_invalid_bodies_and_reports_its_aws_calls(api, monkeypatch):
    configure(monkeypatch, MUTATION_RATE_LIMIT_PER_MINUTE="1")

    def scenario(attempt: int) -> tuple:
        user = f"typo-writer-{attempt}"
        bad = api.post("/v1/images", user=user, body="{not json", headers={"content-type": "application/json"})
        after = api.delete("/v1/images/img_none", user=user)
        return bad.status, after.status, after.json["error"]["code"] if after.json else None

    assert in_one_minute(scenario) == (400, 429, "rate-limited")

    configure(monkeypatch, MUTATION_RATE_LIMIT_PER_MINUTE="100")
    prompt = first(1)[0]
    api.post("/v1/images", user="counted", json_body={"prompt": prompt, **SMALL})

    def warm(_attempt: int) -> str:
        # the key pool's periodic health refresh (a BatchGetItem) or counter flush (an
        # UpdateItem) may land in any request on a slow machine: take one without them
        timing = ""
        for _ in range(5):
            reply = api.post("/v1/images", user="counted", json_body={"prompt": prompt, **SMALL})
            assert reply.status == 201, reply.body
            timing = reply.header("Server-Timing")
            if "BatchGetItem" not in timing and "dynamodb.UpdateItem=4" in timing:
                break
        return timing

    timing = in_one_minute(warm)
    assert "flux;dur=" in timing
    aws = timing.split("aws;desc=")[1]
    assert "s3.PutObject=2" in aws
    # one UpdateItem for the rate limits, the quota and the month's cost, two for the image's
    # spend (its model's, its key's), one for the prompt history; one GetItem for the user's
    # own key (none here)
    assert "dynamodb.UpdateItem=4" in aws, timing
    assert "dynamodb.GetItem=1" in aws, timing
