"""FluxClient and KeyPool against the local stack over HTTP: the Together emulator
(``flux`` fixture) and DynamoDB in moto server mode (``aws`` fixture). Nothing is stubbed."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image
from pynamodb.signals import pre_dynamodb_send

from chalicelib.db.keys import KeyHealthModel
from chalicelib.flux import (
    AllKeysCoolingError,
    FluxClient,
    KeyHealthUnavailableError,
    KeyPool,
    NoUsableKeysError,
    UpstreamBusyError,
    UpstreamFailedError,
    UpstreamRejectedError,
    get_flux_client,
    get_key_pool,
    key_id,
    parse_generation_params,
    reset_flux_client,
    reset_key_pool,
)
from chalicelib.flux.client import normalize_base_url, parse_retry_after
from chalicelib.http import error_headers, error_status
from chalicelib.settings import Settings, get_settings
from devstack.prompts import PARTI_PROMPTS
from tests.fixtures.worker import check_job
from tests.polling import wait_for

PARTI = PARTI_PROMPTS
K1, K2, K3, K4 = "test-key-1", "test-key-2", "test-key-3", "test-key-4"
BOGUS = "sk-live-DO-NOT-LEAK-0123456789abcdef"  # not accepted by the emulator: 401


def _prompts() -> list[str]:
    with PARTI.open(encoding="utf-8", newline="") as fh:
        return [row["Prompt"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


PROMPTS = _prompts()
NON_ASCII = next(p for p in PROMPTS if not p.isascii())
PLAIN = [p for p in PROMPTS if p.isascii() and len(p) > 30][:8]


def settings(flux, keys=(K1, K2), *, v1: bool = True, **overrides) -> Settings:
    values = {
        "together_api_keys": tuple(keys),
        "together_base_url": flux.url + ("/v1" if v1 else ""),
        "key_health_refresh_seconds": 60.0,
        "flux_deadline_seconds": 10.0,
        "flux_request_timeout_seconds": 5.0,
        "flux_default_cooldown_seconds": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


def params(prompt: str = PLAIN[0], **fields) -> object:
    return parse_generation_params({"prompt": prompt, **fields})


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def by_key(flux, key: str) -> dict:
    return flux.stats()["by_key"].get(key_id(key), {"requests": 0, "images": 0, "by_status": {}})


def free_now(pool: KeyPool) -> bool:
    """True if the pool would hand a key out now (none cooling, paced or backed off)."""
    try:
        pool.reserve(params().model, max_wait_s=0.0)
    except AllKeysCoolingError:
        return False
    return True


def report(pool: KeyPool, key: str) -> dict:
    return next(r for r in pool.health_report() if r["key_id"] == key_id(key))


@pytest.fixture
def ddb_calls() -> Iterator[list[str]]:
    """Names of the DynamoDB operations PynamoDB sends while the test runs (observation only)."""
    calls: list[str] = []

    def record(sender, operation_name, table_name, req_uuid, **_):
        calls.append(operation_name)

    pre_dynamodb_send.connect(record)
    try:
        yield calls
    finally:
        pre_dynamodb_send.disconnect(record)


# -- happy path ---------------------------------------------------------------------------------


def test_generates_a_verified_image_and_the_seed_reproduces_it(aws, flux):
    client = FluxClient(settings(flux))
    p = params(NON_ASCII, seed=123456789, aspect_ratio="16:9")
    [img] = client.generate(p)
    assert (img.width, img.height, img.seed, img.index) == (1344, 768, 123456789, 0)
    assert img.content_type == "image/jpeg" and img.ext == "jpg"
    assert img.model == "black-forest-labs/FLUX.1-schnell"
    assert img.key_id in {key_id(K1), key_id(K2)} and img.upstream_ms >= 0
    pic = decode(img.data)
    assert pic.format == "JPEG" and pic.size == (1344, 768)
    [again] = client.generate(p)
    assert again.data == img.data  # same seed, same bytes
    [other] = client.generate(params(NON_ASCII, seed=123456790, aspect_ratio="16:9"))
    assert other.data != img.data
    assert flux.stats()["by_status"] == {"200": 3}


def test_base_url_without_v1_and_png_output(aws, flux):
    client = FluxClient(settings(flux, v1=False))
    assert client.endpoint == flux.url + "/v1/images/generations"
    [img] = client.generate(
        params(PLAIN[1], model="black-forest-labs/FLUX.2-pro", output_format="png", width=512, height=320)
    )
    assert img.content_type == "image/png" and img.ext == "png"
    assert decode(img.data).format == "PNG" and decode(img.data).size == (512, 320)


def test_url_response_format_is_downloaded(aws, flux):
    client = FluxClient(settings(flux), response_format="url")
    p = params(PLAIN[2], seed=42)
    [img] = client.generate(p)
    assert decode(img.data).size == (1024, 1024)
    [inline] = FluxClient(settings(flux)).generate(p)
    assert inline.data == img.data  # same image whichever way it travelled


def test_n_images_use_consecutive_seeds_and_spread_over_keys(aws, flux):
    client = FluxClient(settings(flux))
    images = client.generate(params(PLAIN[3], seed=2**32 - 2, n=4))
    assert [i.index for i in images] == [0, 1, 2, 3]
    assert [i.seed for i in images] == [2**32 - 2, 2**32 - 1, 0, 1]  # wraps at 2**32
    assert len({i.data for i in images}) == 4
    assert by_key(flux, K1)["images"] == 2 and by_key(flux, K2)["images"] == 2  # round-robin
    # each stored seed reproduces its image with n=1
    [third] = client.generate(params(PLAIN[3], seed=0))
    assert third.data == images[2].data


def test_round_robin_across_calls(aws, flux):
    client = FluxClient(settings(flux, keys=(K1, K2, K3)))
    for prompt in PLAIN[:6]:
        client.generate(params(prompt))
    assert [by_key(flux, k)["requests"] for k in (K1, K2, K3)] == [2, 2, 2]


# -- key health ---------------------------------------------------------------------------------


def _exhaust(flux, key: str, times: int) -> None:
    """Use up ``key``'s emulated rate limit directly over HTTP."""
    for _ in range(times):
        r = requests.post(
            flux.url + "/v1/images/generations",
            json={
                "model": "black-forest-labs/FLUX.1-schnell",
                "prompt": "warm-up",
                "width": 256,
                "height": 256,
            },
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert r.status_code == 200


def test_a_rate_limited_key_cools_and_the_next_key_serves(aws, flux):
    flux.reset(rate_limit_per_minute=2)  # real time: Retry-After is up to 60 s
    _exhaust(flux, K1, 2)
    pool = KeyPool(settings(flux))
    client = FluxClient(settings(flux), pool=pool)
    first = client.generate(params(PLAIN[0]))
    second = client.generate(params(PLAIN[1]))
    assert {first[0].key_id, second[0].key_id} == {key_id(K2)}
    assert by_key(flux, K1)["by_status"].get("429") == 1  # tried once, then left alone
    row = report(pool, K1)
    assert row["state"] == "cooling" and not row["usable"] and row["rate_limited"] == 1
    assert 50 < row["cooldown_remaining_s"] <= 61  # from Retry-After, not the 10 s default
    # shared: a new instance reads the cooldown from DynamoDB
    assert report(KeyPool(settings(flux)), K1)["state"] == "cooling"


def test_all_keys_cooling_raises_with_retry_time(aws, flux):
    flux.reset(rate_limit_per_minute=1)
    _exhaust(flux, K1, 1)  # used up behind the client's back: it learns from the 429s
    _exhaust(flux, K2, 1)
    client = FluxClient(settings(flux))
    before = time.time()
    with pytest.raises(AllKeysCoolingError) as info:
        client.generate(params(PLAIN[2]))
    err = info.value
    assert (error_status(err.code), err.code) == (503, "keys-cooling")
    assert 50 < err.retry_after <= 60 * 1.03 + 0.5 and err.retry_at >= before + 50  # reset + pacing margin
    assert error_headers(err)["Retry-After"] == str(math.ceil(err.retry_after))
    assert flux.stats()["requests"] == 4  # one 429 per key, no hammering
    # one call cools one key in the table; the other is only paced here, from its 429's headers
    assert sorted(r["state"] for r in client.pool.health_report()) == ["cooling", "healthy"]
    with pytest.raises(AllKeysCoolingError):  # the next call fails fast, with no upstream request
        client.generate(params(PLAIN[3]))
    assert flux.stats()["requests"] == 4
    client.pool.flush()  # shares the pacing of the keys that ran dry (with the success counters)
    with pytest.raises(AllKeysCoolingError) as again:  # so a new instance fails fast too
        FluxClient(settings(flux)).generate(params(PLAIN[3]))
    assert abs(again.value.retry_at - err.retry_at) < 2.5  # Retry-After vs reset + pacing margin
    assert flux.stats()["requests"] == 4


def test_keys_that_ran_dry_are_paced_before_sending(aws, flux, ddb_calls):
    flux.reset(rate_limit_per_minute=1)
    client = FluxClient(settings(flux))
    client.generate(params(PLAIN[0]))  # each answer says: 0 remaining, reset in 60 s
    client.generate(params(PLAIN[1]))
    ddb_calls.clear()
    with pytest.raises(AllKeysCoolingError) as info:
        client.generate(params(PLAIN[2]))
    assert 50 < info.value.retry_after <= 60 * 1.03 + 0.5
    assert flux.stats()["by_status"] == {"200": 2}  # waited before sending: no 429 at all
    assert ddb_calls == []  # and no DynamoDB round trip to know it
    assert all(r["state"] == "healthy" for r in client.pool.health_report())


def test_a_cooldown_that_ends_soon_is_waited_for(aws, flux):
    flux.reset(rate_limit_per_minute=1, time_scale=60)  # a minute lasts one second
    _exhaust(flux, K1, 1)
    client = FluxClient(settings(flux, keys=(K1,)))
    [img] = client.generate(params(PLAIN[1]))  # 429 with Retry-After <= 1 s, waited for, then served
    assert img.key_id == key_id(K1)
    assert by_key(flux, K1)["by_status"] == {"200": 2, "429": 1}
    [img] = client.generate(params(PLAIN[2]))  # now paced from the headers: waits, no 429
    assert by_key(flux, K1)["by_status"] == {"200": 3, "429": 1}


def test_401_disables_the_key_for_every_instance(aws, flux):
    client = FluxClient(settings(flux, keys=(K1, BOGUS)))
    for prompt in PLAIN[:3]:
        assert client.generate(params(prompt))[0].key_id == key_id(K1)
    row = report(client.pool, BOGUS)
    assert row["state"] == "disabled" and row["reason"].startswith("401")
    assert flux.stats()["by_status"]["401"] == 1  # never tried again

    fresh = KeyPool(settings(flux, keys=(K1, BOGUS)))
    assert report(fresh, BOGUS)["state"] == "disabled"
    assert fresh.healthy_count() == 1
    assert {fresh.acquire().key_id for _ in range(4)} == {key_id(K1)}

    fresh.reset_key(key_id(BOGUS))  # operator action
    assert report(KeyPool(settings(flux, keys=(K1, BOGUS))), BOGUS)["state"] == "healthy"


def test_402_marks_out_of_credits_and_no_usable_key_is_a_503(aws, flux):
    flux.reset(out_of_credits=[K2])
    client = FluxClient(settings(flux))
    for prompt in PLAIN[:2]:
        assert client.generate(params(prompt))[0].key_id == key_id(K1)
    assert report(client.pool, K2)["state"] == "out_of_credits"

    flux.reset(out_of_credits=[K1, K2])
    broke = FluxClient(settings(flux, keys=(K1, K2)))
    with pytest.raises(NoUsableKeysError) as info:
        broke.generate(params(PLAIN[2]))
    assert (error_status(info.value.code), info.value.code) == (503, "no-usable-keys")
    # the new instance already knew K2 was out of credits (shared table): only K1 was tried
    assert flux.stats()["by_status"] == {"402": 1}


def test_no_configured_key_is_a_503(aws, flux):
    with pytest.raises(NoUsableKeysError):
        FluxClient(settings(flux, keys=())).generate(params())


# -- upstream failures --------------------------------------------------------------------------


def test_422_is_not_retried(aws, flux):
    client = FluxClient(settings(flux))
    with pytest.raises(UpstreamRejectedError) as info:
        client.generate(params(PLAIN[0] + " __REJECT__"))
    err = info.value
    assert (error_status(err.code), err.code, err.field, err.upstream_status) == (
        422,
        "upstream-rejected",
        "prompt",
        422,
    )
    assert "safety" in err.message
    assert flux.stats()["requests"] == 1
    assert all(r["errors"] == 0 and r["state"] == "healthy" for r in client.pool.health_report())


def test_500_everywhere_fails_within_the_deadline(aws, flux):
    flux.reset(p500=1.0)
    client = FluxClient(settings(flux, flux_deadline_seconds=6.0))
    started = time.monotonic()
    with pytest.raises(UpstreamFailedError) as info:
        client.generate(params())
    assert time.monotonic() - started < 6.0 + 1.5  # the deadline, plus slack for a loaded machine
    err = info.value
    assert (error_status(err.code), err.code, err.retryable) == (502, "upstream-failed", True)
    assert 1 <= err.attempts == flux.stats()["requests"] <= 2 * 2 + 2  # bounded attempts
    assert "500" in err.last_error
    assert sum(r["errors"] for r in client.pool.health_report()) == err.attempts
    assert all(r["state"] == "healthy" for r in client.pool.health_report())  # 5xx is no state change


def test_corrupt_images_are_retried_and_never_returned(aws, flux):
    flux.reset(pcorrupt=1.0)
    client = FluxClient(settings(flux))
    with pytest.raises(UpstreamFailedError) as info:
        client.generate(params())
    assert "image" in info.value.last_error
    assert flux.stats()["faults"]["corrupt"] == info.value.attempts


def test_an_occasional_corrupt_image_is_replaced(aws, flux):
    flux.reset(pcorrupt=0.5, fault_seed=11)
    images = FluxClient(settings(flux, keys=(K1, K2, K3, K4))).generate(params(PLAIN[4], n=4))
    assert flux.stats()["faults"].get("corrupt", 0) >= 1
    assert flux.stats()["images"] == 4
    for img in images:
        assert decode(img.data).size == (1024, 1024)


def test_hanging_upstream_respects_the_deadline(aws, flux):
    flux.reset(ptimeout=1.0, hang_seconds=2.0)
    client = FluxClient(settings(flux, flux_request_timeout_seconds=0.5, flux_deadline_seconds=1.5))
    started = time.monotonic()
    with pytest.raises(UpstreamFailedError) as info:
        client.generate(params())
    assert time.monotonic() - started < 2.0
    assert "timeout" in info.value.last_error and info.value.attempts >= 2
    # let the hanging handlers finish so they are not counted in the next test
    until = time.monotonic() + 5
    while flux.stats()["requests"] < info.value.attempts and time.monotonic() < until:
        time.sleep(0.05)


def test_deadline_override(aws, flux):
    flux.reset(p500=1.0)
    started = time.monotonic()
    with pytest.raises(UpstreamFailedError):
        FluxClient(settings(flux, keys=(K1, K2, K3, K4))).generate(params(), deadline_s=0.8)
    assert time.monotonic() - started < 1.3


# -- one request changes at most one key ----------------------------------------------------------

KEYS4 = (K1, K2, K3, K4)


def stored(keys=KEYS4) -> dict[str, tuple[str, bool]]:
    """The key-health table as DynamoDB holds it: key id -> (stored state, cooldown running)."""
    now = time.time()
    rows = {row.key_id: row for row in KeyHealthModel.batch_get([key_id(k) for k in keys], consistent_read=True)}
    out = {}
    for key in keys:
        row = rows.get(key_id(key))
        state = (row.state or "healthy") if row else "healthy"
        out[key_id(key)] = (state, bool(row and float(row.cooldown_until or 0) > now))
    return out


def changed_keys(before: dict, after: dict) -> dict[str, tuple[str, bool]]:
    return {kid: after[kid] for kid in before if after[kid] != before[kid]}


def test_a_403_request_error_is_the_users_problem_and_no_key_changes(aws, flux):
    client = FluxClient(settings(flux, keys=KEYS4))
    client.pool.refresh()
    before = stored()
    with pytest.raises(UpstreamRejectedError) as info:
        client.generate(params(PLAIN[0] + " __FORBID__"))
    assert (error_status(info.value.code), info.value.code, info.value.upstream_status) == (
        422,
        "upstream-rejected",
        403,
    )
    assert flux.stats()["requests"] == 1  # not retried on every key
    assert changed_keys(before, stored()) == {}
    assert all(r["state"] == "healthy" and r["usable"] for r in client.pool.health_report())
    # the next request (another user's) is served
    assert client.generate(params(PLAIN[1]))[0].data


def test_a_waf_403_page_on_content_changes_no_key(aws, flux):
    client = FluxClient(settings(flux, keys=KEYS4))
    with pytest.raises(UpstreamRejectedError) as info:
        client.generate(params(PLAIN[2] + " __WAF__"))
    assert info.value.upstream_status == 403 and "Request blocked" in info.value.message
    assert all(state == "healthy" for state, _ in stored().values())
    assert client.pool.healthy_count() == 4


def test_a_revoked_key_is_disabled_and_only_that_one(aws, flux):
    flux.reset(revoked=[K3])
    client = FluxClient(settings(flux, keys=KEYS4))
    for prompt in PLAIN[:5]:  # round-robin meets K3 within four calls; every call is served
        assert client.generate(params(prompt))[0].key_id != key_id(K3)
    states = {kid: state for kid, (state, _) in stored().items()}
    assert states == {key_id(K1): "healthy", key_id(K2): "healthy", key_id(K3): "disabled", key_id(K4): "healthy"}
    row = report(client.pool, K3)
    assert row["reason"].startswith("403") and "GET /models: 403" in row["reason"]
    assert by_key(flux, K3)["by_status"] == {"403": 1}  # never used again


def test_one_request_disables_at_most_one_key_even_if_all_are_revoked(aws, flux):
    flux.reset(revoked=list(KEYS4))
    client = FluxClient(settings(flux, keys=KEYS4))
    client.pool.refresh()
    before = stored()
    with pytest.raises(UpstreamFailedError):
        client.generate(params(PLAIN[0]))
    first = changed_keys(before, stored())
    assert list(first.values()) == [("disabled", False)]
    assert flux.stats()["by_status"] == {"403": 4}  # each key tried once, three only skipped
    with pytest.raises(UpstreamFailedError):  # the next request takes out the next key
        FluxClient(settings(flux, keys=KEYS4)).generate(params(PLAIN[1]))
    assert sorted(state for state, _ in stored().values()) == ["disabled", "disabled", "healthy", "healthy"]


def test_a_503_storm_leaves_every_key_healthy_and_is_a_503_with_retry_after(aws, flux):
    flux.reset(p503=1.0, retry_after_503=1.0)
    client = FluxClient(settings(flux, keys=KEYS4, flux_deadline_seconds=3.0))
    client.pool.refresh()
    before = stored()
    for prompt in PLAIN[:3]:
        with pytest.raises(UpstreamBusyError) as info:
            client.generate(params(prompt))
        err = info.value
        assert (error_status(err.code), err.code) == (503, "upstream-busy")
        assert int(error_headers(err)["Retry-After"]) >= 1
    assert changed_keys(before, stored()) == {}
    rows = client.pool.health_report()
    assert all(r["state"] == "healthy" and r["errors"] == 0 and r["rate_limited"] == 0 for r in rows)
    flux.reset()  # capacity is back: served at once
    assert client.generate(params(PLAIN[3]))[0].data


def _delete_key_table() -> None:
    from chalicelib.aws import client as aws_client

    aws_client("dynamodb").delete_table(TableName=KeyHealthModel.Meta.table_name)


def test_a_cold_instance_whose_health_read_fails_uses_no_key(aws, flux):
    from devstack.resources import ensure_all

    warm = KeyPool(settings(flux))
    warm.refresh()
    warm.report_disabled(key_id(K1), "401: revoked")
    _delete_key_table()  # DynamoDB now answers ResourceNotFoundException to every read

    cold = KeyPool(settings(flux))
    assert cold.healthy_count() == 0
    with pytest.raises(KeyHealthUnavailableError) as info:
        FluxClient(settings(flux, flux_deadline_seconds=2.5), pool=cold).generate(params())
    assert (error_status(info.value.code), info.value.code, error_headers(info.value)["Retry-After"]) == (
        503,
        "key-health-unavailable",
        "1",
    )
    assert flux.stats()["requests"] == 0  # K1 (disabled in the table) was not used, nor any key

    ensure_all()  # the table is back, with the row that says K1 is disabled
    KeyHealthModel(key_id(K1), state="disabled", reason="401: revoked", updated_at=int(time.time())).save()
    client = FluxClient(settings(flux), pool=cold)
    for prompt in PLAIN[:4]:
        assert client.generate(params(prompt))[0].key_id == key_id(K2)
    assert by_key(flux, K1)["requests"] == 0


def test_a_disabled_key_stays_out_when_its_write_failed(aws, flux):
    from devstack.resources import ensure_all

    pool = KeyPool(settings(flux, key_health_refresh_seconds=0.0))
    pool.refresh()
    _delete_key_table()
    pool.report_disabled(key_id(K1), "401: revoked")  # the write fails
    assert not pool.refresh()  # and so does the read: the snapshot stands
    assert report(pool, K1)["state"] == "disabled"
    ensure_all()  # the table is back, empty: the rows are seeded healthy
    assert pool.refresh(force=True)
    assert report(pool, K1)["state"] == "disabled"  # not resurrected by the healthy seed...
    assert stored((K1, K2))[key_id(K1)] == ("disabled", False)  # ...and written again
    assert {pool.acquire().key_id for _ in range(4)} == {key_id(K2)}


def test_a_health_read_older_than_a_local_terminal_state_does_not_undo_it(aws, flux):
    """A refresh whose rows were read before this instance's 402 write landed must not bring
    the key back: the row's ``updated_at`` is older than the local state. A newer row (an
    operator's reset) does."""
    pool = KeyPool(settings(flux, key_health_refresh_seconds=0.0))
    pool.refresh()
    pool.report_disabled(key_id(K1), "402: out of credits", state="out_of_credits")
    written = report(pool, K1)["updated_at"]
    KeyHealthModel(key_id(K1), state="healthy", updated_at=int(written) - 5).save()  # the stale snapshot
    assert pool.refresh(force=True)
    assert report(pool, K1)["state"] == "out_of_credits"
    KeyHealthModel(key_id(K1), state="healthy", updated_at=int(written) + 5).save()  # a later reset
    assert pool.refresh(force=True)
    assert report(pool, K1)["state"] == "healthy"


UPSTREAM_ANSWERS = [
    # (case, emulator config, prompt marker, keys, error raised, stored state a key may take)
    ("400", {}, "__STATUS_400__", KEYS4, UpstreamRejectedError, None),
    ("401-request", {}, "__STATUS_401__", KEYS4, UpstreamRejectedError, None),
    ("401-auth", {}, "", ("bogus-1", "bogus-2", "bogus-3", "bogus-4"), UpstreamFailedError, "disabled"),
    ("402", {"out_of_credits": list(KEYS4)}, "", KEYS4, UpstreamFailedError, "out_of_credits"),
    ("403-request", {}, "__FORBID__", KEYS4, UpstreamRejectedError, None),
    ("403-waf", {}, "__WAF__", KEYS4, UpstreamRejectedError, None),
    ("403-auth", {"revoked": list(KEYS4)}, "", KEYS4, UpstreamFailedError, "disabled"),
    ("404", {}, "__STATUS_404__", KEYS4, UpstreamRejectedError, None),
    ("413", {}, "__STATUS_413__", KEYS4, UpstreamRejectedError, None),
    ("422", {}, "__REJECT__", KEYS4, UpstreamRejectedError, None),
    ("429", {}, "__STATUS_429__", KEYS4, AllKeysCoolingError, None),
    ("500", {}, "__STATUS_500__", KEYS4, UpstreamFailedError, None),
    ("502", {}, "__STATUS_502__", KEYS4, UpstreamFailedError, None),
    ("503", {}, "__STATUS_503__", KEYS4, UpstreamBusyError, None),
    ("timeout", {"ptimeout": 1.0, "hang_seconds": 1.0}, "", KEYS4, UpstreamFailedError, None),
    ("garbage", {}, "__STATUS_GARBAGE__", KEYS4, UpstreamFailedError, None),
]


@pytest.mark.parametrize(
    ("case", "config", "marker", "keys", "error", "terminal"), UPSTREAM_ANSWERS, ids=[c[0] for c in UPSTREAM_ANSWERS]
)
def test_no_single_request_changes_more_than_one_key(aws, flux, case, config, marker, keys, error, terminal):
    flux.reset(**config)
    s = settings(flux, keys=keys, flux_deadline_seconds=3.0, flux_request_timeout_seconds=0.5)
    client = FluxClient(s)
    client.pool.refresh()
    before = stored(keys)
    with pytest.raises(error):
        client.generate(params(f"{PLAIN[5]} {marker}".strip()))
    changed = changed_keys(before, stored(keys))
    assert len(changed) <= 1, changed
    states = {state for state, _ in changed.values() if state != "healthy"}
    if terminal is None:  # no auth/credit answer confirmed for a key: no stored state changes
        assert states == set()
    else:  # the key's own confirmed answer: that key, and only it
        assert states == {terminal} and len(changed) == 1
        assert set(flux.stats()["by_status"]) in ({"401"}, {"402"}, {"403"})  # each key's own answer
    if case == "429":  # a cooldown, from the answer's Retry-After, on one key at most
        assert [cooling for _, cooling in changed.values()] in ([], [True])
    # the pool serves the next (ordinary) request if the upstream does (after a 503's back-off)
    if not config and terminal is None:
        wait_for(lambda: free_now(client.pool), timeout_s=15, what="(the back-off to end)")
        assert client.generate(params(PLAIN[6]))[0].data


# -- through the API (POST /v1/images on the app, with the stack behind it) -------------------------

SMALL = {"width": 256, "height": 256}


def test_api_a_403_prompt_is_a_4xx_and_another_user_is_still_served(api, flux):
    before = stored()
    reply = api.post("/v1/images", user="mallory", json_body={"prompt": PLAIN[0] + " __FORBID__", **SMALL})
    assert reply.status == 422, reply.body
    assert reply.json["error"]["code"] == "upstream-rejected"
    for _ in range(3):  # hostile repeats change nothing either
        assert (
            api.post("/v1/images", user="mallory", json_body={"prompt": "__FORBID__ " + PLAIN[1], **SMALL}).status
            == 422
        )
    assert changed_keys(before, stored()) == {}
    assert all(state == "healthy" for state, _ in stored().values())
    reply = api.post("/v1/images", user="alice", json_body={"prompt": PLAIN[2], **SMALL})
    assert reply.status == 201, reply.body


def test_api_a_revoked_key_is_disabled_and_users_are_served(api, flux):
    flux.reset(revoked=[K2])
    for prompt in PLAIN[:5]:
        reply = api.post("/v1/images", user="bob", json_body={"prompt": prompt, **SMALL})
        assert reply.status == 201, reply.body
    assert {kid: state for kid, (state, _) in stored().items()} == {
        key_id(K1): "healthy",
        key_id(K2): "disabled",
        key_id(K3): "healthy",
        key_id(K4): "healthy",
    }


def test_api_a_503_storm_is_a_503_with_retry_after_and_blames_no_key(api, flux):
    flux.reset(p503=1.0, retry_after_503=3.0)
    before = stored()
    reply = api.post("/v1/images", user="carol", json_body={"prompt": PLAIN[3], **SMALL})
    assert reply.status == 503, reply.body
    assert reply.json["error"]["code"] == "upstream-busy"
    assert 1 <= int(reply.header("Retry-After")) <= 3  # the last 503's Retry-After, counted down
    assert flux.stats()["by_status"] == {"503": flux.stats()["requests"]}
    assert changed_keys(before, stored()) == {}
    assert api.get("/v1/me/usage", user="carol").json["used"] == 0


# -- pacing -------------------------------------------------------------------------------------


def test_pacing_follows_the_rate_limit_headers_and_avoids_429s(aws, flux):
    flux.reset(rate_limit_per_minute=4, time_scale=30)  # 4 images per 2 s window per key
    client = FluxClient(settings(flux, keys=(K1,), flux_deadline_seconds=20.0))
    for prompt in PLAIN[:8]:  # twice the window's capacity: the second half waits for its slots
        client.generate(params(prompt, width=256, height=256))
    assert by_key(flux, K1)["by_status"] == {"200": 8}  # waited before sending, never after a 429


def test_concurrent_first_sends_probe_the_key_instead_of_bursting(aws, flux):
    # 2 images per 3 s window, 0.3 s latency: before the key's first answer nothing is known of
    # its rate, so one send probes it; the other threads wait for it (or are told to come back)
    flux.reset(rate_limit_per_minute=2, time_scale=20, latency_ms=300)
    client = FluxClient(settings(flux, keys=(K1,), flux_deadline_seconds=20.0))

    def one(prompt: str) -> str:
        try:
            client.generate(params(prompt, width=256, height=256))
            return "ok"
        except AllKeysCoolingError:  # paced beyond the short in-process wait: come back later
            return "later"

    with ThreadPoolExecutor(max_workers=4) as threads:
        outcomes = list(threads.map(one, PLAIN[:4]))
    assert outcomes.count("ok") >= 2
    assert "429" not in by_key(flux, K1)["by_status"], by_key(flux, K1)  # waited, never answered 429


def test_a_503_backs_off_every_key_without_blame(aws, flux):
    flux.reset(retry_after_503=0.6, time_scale=1)
    pool = KeyPool(settings(flux, keys=KEYS4))
    client = FluxClient(settings(flux, keys=KEYS4), pool=pool)
    with pytest.raises(UpstreamBusyError):
        client.generate(params(PLAIN[0] + " __STATUS_503__"), deadline_s=1.0)
    model = params().model
    assert pool.reserve(model, max_wait_s=5.0)[1] > 0  # every key waits: the platform is busy
    assert all(r["state"] == "healthy" and r["errors"] == 0 for r in pool.health_report())


def test_a_paced_job_meets_few_429s_and_loses_no_image(api, worker, flux):
    # 4 keys x 2 images per 3 s window, 0.3 s upstream latency: 24 images turn each key's window
    # over twice. Once a window is full, an answer's reset says only when its oldest image leaves
    # it; pacing from that alone (not the sustained rate, not the sends in flight) bursts into
    # 429s. The limit halves for a key that meets 5 429s in a window.
    flux.reset(rate_limit_per_minute=2, time_scale=20, latency_ms=300, tighten_after_429s=5)
    prompts = PROMPTS[300:324]
    reply = api.post("/v1/jobs", user="pace", json_body={"prompts": prompts, "width": 256, "height": 256})
    assert reply.status == 202, reply.body
    job_id = reply.json["job_id"]
    worker.start()
    worker.wait_finished("pace", job_id, timeout_s=120)
    state = check_job("pace", job_id)  # no image lost, none duplicated, no orphan object
    assert [item.status for item in state["items"]] == ["succeeded"] * len(prompts)
    assert len(state["images"]) == len(prompts)
    stats = flux.stats()
    share = stats["by_status"].get("429", 0) / stats["requests"]
    assert share <= 0.05, stats["by_status"]


# -- cost of the healthy path ---------------------------------------------------------------------


def test_healthy_path_makes_no_dynamodb_call_per_request(aws, flux, ddb_calls):
    now = [time.time()]
    pool = KeyPool(settings(flux), flush_interval_s=30.0, clock=lambda: now[0])
    client = FluxClient(settings(flux), pool=pool)
    client.generate(params(PLAIN[0]))  # first use: one BatchGet, rows seeded
    assert ddb_calls[0] == "BatchGetItem" and set(ddb_calls) == {"BatchGetItem", "PutItem"}
    ddb_calls.clear()

    for prompt in PLAIN[1:6]:
        client.generate(params(prompt))
    assert ddb_calls == []  # five images, no DynamoDB round trip

    now[0] += 61  # snapshot stale: exactly one BatchGet; flush interval passed: one ADD per key
    client.generate(params(PLAIN[6]))
    assert sorted(ddb_calls) == ["BatchGetItem", "UpdateItem", "UpdateItem"]
    ddb_calls.clear()
    pool.flush()  # the last success
    assert ddb_calls == ["UpdateItem"]

    rows = KeyPool(settings(flux)).health_report()
    assert sum(r["successes"] for r in rows) == sum(r["requests"] for r in rows) == 7


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [json.dumps([K3, K4]), json.dumps({"keys": [K3, K4]})])
def test_keys_from_secrets_manager(aws, flux, value):
    from chalicelib.aws import client as aws_client

    reset_key_pool()
    aws_client("secretsmanager").create_secret(Name="promptcanvas/together", SecretString=value)
    s = settings(flux, keys=(), together_keys_secret_id="promptcanvas/together")
    pool = KeyPool(s)
    assert pool.key_ids == [key_id(K3), key_id(K4)]
    assert FluxClient(s, pool=pool).generate(params())[0].key_id in pool.key_ids
    reset_key_pool()


def test_unreadable_secret_is_no_usable_keys(aws, flux):
    reset_key_pool()
    with pytest.raises(NoUsableKeysError):
        KeyPool(settings(flux, keys=(), together_keys_secret_id="missing-secret"))


def test_process_wide_client(aws, flux, monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEYS", f"{K1},{K2}")
    monkeypatch.setenv("TOGETHER_BASE_URL", flux.url)
    get_settings.cache_clear()
    reset_flux_client()
    reset_key_pool()
    try:
        client = get_flux_client()
        assert client is get_flux_client() and client.pool is get_key_pool()
        assert len(client.generate(params())) == 1
    finally:
        reset_flux_client()
        reset_key_pool()
        get_settings.cache_clear()


# -- secrecy ------------------------------------------------------------------------------------


def test_keys_never_leak(aws, flux, caplog):
    caplog.set_level(logging.DEBUG)
    keys = (K1, BOGUS, K2)
    client = FluxClient(settings(flux, keys=keys))
    errors: list[Exception] = []
    for prompt in PLAIN[:3]:
        client.generate(params(prompt))  # BOGUS is disabled on the way (401)
    for config, prompt in ((dict(p503=1.0), PLAIN[0]), ({}, PLAIN[1] + " __REJECT__")):
        flux.reset(**config)
        wait_for(lambda: free_now(client.pool), timeout_s=15, what="(the 503 back-off to end)")
        try:
            client.generate(params(prompt), deadline_s=3)
        except Exception as exc:  # noqa: BLE001 - collected for inspection
            errors.append(exc)
    flux.reset(rate_limit_per_minute=1)
    try:
        for prompt in PLAIN[:4]:
            client.generate(params(prompt))
    except AllKeysCoolingError as exc:
        errors.append(exc)
    assert [type(e) for e in errors] == [UpstreamBusyError, UpstreamRejectedError, AllKeysCoolingError]

    texts = [rec.getMessage() for rec in caplog.records]
    texts += [str(e) + repr(vars(e)) for e in errors]
    texts.append(json.dumps(client.pool.health_report(), default=str))
    try:
        lease = client.pool.reserve(params().model, max_wait_s=3600.0)[0]
    except Exception:  # noqa: BLE001 - no key to show
        lease = None
    texts.append(repr(client.pool) + repr(lease))
    texts += [json.dumps(row.attribute_values, default=str) for row in KeyHealthModel.scan()]
    blob = "\n".join(texts)
    assert key_id(BOGUS) in blob  # the ids are there...
    for key in keys:
        assert key not in blob  # ...the keys are not


# -- helpers ------------------------------------------------------------------------------------


def test_normalize_base_url():
    assert normalize_base_url("https://api.together.ai") == "https://api.together.ai/v1"
    assert normalize_base_url("https://api.together.xyz/v1/") == "https://api.together.xyz/v1"


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-3") == 0.0


def test_rate_limit_headers_are_parsed_defensively():
    from chalicelib.flux.pacing import MAX_PACE_S, RateInfo

    info = RateInfo.from_headers({"x-ratelimit-limit": "60", "x-ratelimit-remaining": "3", "x-ratelimit-reset": "1.5"})
    assert (info.limit, info.remaining, info.reset_s) == (60, 3, 1.5)
    assert RateInfo.from_headers({"x-ratelimit-remaining": "3"}) is None  # no reset: Retry-After decides
    for bad in ("nan", "inf", "soon", ""):
        assert RateInfo.from_headers({"x-ratelimit-remaining": bad, "x-ratelimit-reset": "1"}) is None
    odd = RateInfo.from_headers({"x-ratelimit-remaining": "-4", "x-ratelimit-reset": "1e9"})
    assert (odd.remaining, odd.reset_s) == (0, MAX_PACE_S)  # a hostile reset is capped


def test_a_short_pacing_wait_past_the_deadline_after_failures_is_an_upstream_failure(aws, flux):
    # one key: after its 500 the key's next slot is half a second on (FIRST_SEND_GAP_S), a wait
    # the client would take, but not before a 0.6 s deadline. The 500 ended the request, not a
    # busy platform: UpstreamFailedError, never "busy, retry in 1 s".
    flux.reset(p500=1.0)
    for _ in range(3):
        with pytest.raises(UpstreamFailedError) as caught:
            FluxClient(settings(flux, keys=(K1,))).generate(params(), deadline_s=0.6)
        assert caught.value.attempts >= 1 and "500" in (caught.value.last_error or "")
