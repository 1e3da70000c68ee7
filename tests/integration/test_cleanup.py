"""The cleanup sweeps against the moto server over HTTP (fixture ``aws``), with real
objects and items. Ages are set by writing objects at two moments and passing ``now``
into the sweeps (S3 ``LastModified`` is the server's clock; nothing is patched)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from ulid import ULID

from chalicelib.aws import client
from chalicelib.db import ImageModel
from chalicelib.services import cleanup
from chalicelib.settings import get_settings
from chalicelib.storage import objects
from devstack.prompts import parti_prompts

RETENTION_DAYS = 30


def _put(key: str, body: bytes = b"x") -> datetime:
    """Write one object; returns its LastModified as the server recorded it."""
    s3 = client("s3")
    bucket = get_settings().images_bucket
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return s3.head_object(Bucket=bucket, Key=key)["LastModified"]


def _image(user_id: str, created_at: datetime, *, original: bool = True, thumb: bool = True) -> ImageModel:
    """Seed one image: objects (as chosen) and its metadata item."""
    image_id = str(ULID())
    s3_key = objects.image_key(user_id, image_id, "png")
    t_key = objects.thumb_key(user_id, image_id)
    if original:
        _put(s3_key)
    if thumb:
        _put(t_key)
    item = ImageModel(
        user_id,
        image_id,
        prompt="a lighthouse",
        model="flux-schnell",
        width=64,
        height=64,
        steps=4,
        seed=1,
        s3_key=s3_key,
        thumb_key=t_key,
        bytes=1,
        content_type="image/png",
        created_at=created_at,
    )
    item.save()
    return item


def _all_keys() -> set[str]:
    pages = client("s3").get_paginator("list_objects_v2").paginate(Bucket=get_settings().images_bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def _all_items() -> set[tuple[str, str]]:
    return {(i.user_id, i.image_id) for i in ImageModel.scan()}


@dataclass
class Dataset:
    """A seeded bucket and table, and what must survive the sweeps."""

    now_hour: datetime  # 1 h after the first writes, before 1 h after the second
    now_day: datetime  # 24 h after the first writes, before 24 h after the second
    keep_keys: set[str] = field(default_factory=set)
    keep_items: set[tuple[str, str]] = field(default_factory=set)
    gone_keys: set[str] = field(default_factory=set)
    gone_items: set[tuple[str, str]] = field(default_factory=set)


@pytest.fixture
def dataset(aws) -> Dataset:
    """Live images, uploads in flight, expired images, orphans of both kinds, archives.

    Objects are written in two waves about a second apart: wave 1 (``t1``) holds
    everything that is old, wave 2 (``t2``) the uploads in flight and the fresh archive.
    ``now_hour`` / ``now_day`` lie between ``t1 + age`` and ``t2 + age``.
    """
    real_now = datetime.now(UTC)
    data = Dataset(now_hour=real_now, now_day=real_now)

    def keep(item: ImageModel, *, thumb: bool = True) -> None:
        data.keep_items.add((item.user_id, item.image_id))
        data.keep_keys.add(item.s3_key)
        if thumb:
            data.keep_keys.add(item.thumb_key)

    def gone(item: ImageModel, *, original: bool = True, thumb: bool = True) -> None:
        data.gone_items.add((item.user_id, item.image_id))
        if original:
            data.gone_keys.add(item.s3_key)
        if thumb:
            data.gone_keys.add(item.thumb_key)

    users = [f"user_{n}" for n in range(4)]
    # wave 1 ------------------------------------------------------------------------------
    for n, user in enumerate(users):
        for age_days in (0, 1, RETENTION_DAYS - 1):  # live, inside the retention period
            keep(_image(user, real_now - timedelta(days=age_days, minutes=n)))
        gone(_image(user, real_now - timedelta(days=RETENTION_DAYS + 1 + n)))  # expired
    gone(_image("user_0", real_now - timedelta(days=400)))  # long expired
    # orphan objects: an original and a thumbnail without an item, and a stray extension
    for key in (
        objects.image_key("user_1", str(ULID()), "png"),
        objects.thumb_key("user_2", str(ULID())),
        objects.image_key("user_3", str(ULID()), "jpeg"),
    ):
        _put(key)
        data.gone_keys.add(key)
    # an object beside a live image's, with no item referencing it
    live = _image("user_0", real_now - timedelta(hours=3))
    keep(live)
    stray = objects.image_key("user_0", live.image_id, "jpeg")
    _put(stray)
    data.gone_keys.add(stray)
    # orphan metadata: the original is gone (with or without its thumbnail)
    gone(_image("user_1", real_now - timedelta(days=2), original=False), original=False)
    gone(_image("user_2", real_now - timedelta(days=2), original=False, thumb=False), original=False, thumb=False)
    # a missing thumbnail alone keeps the image
    keep(_image("user_3", real_now - timedelta(days=2), thumb=False), thumb=False)
    # a key under users/ in an unknown layout is never deleted
    unknown = "users/user_0/notes/readme.txt"
    _put(unknown)
    data.keep_keys.add(unknown)
    # old archives
    for n in range(3):
        key = f"archives/user_{n}/{ULID()}.zip"
        _put(key)
        data.gone_keys.add(key)
    t1 = max(client("s3").head_object(Bucket=get_settings().images_bucket, Key=k)["LastModified"] for k in _all_keys())
    time.sleep(1.2)  # LastModified has one-second resolution on some servers
    # wave 2 ------------------------------------------------------------------------------
    t2 = None
    for key in (
        objects.image_key("user_0", str(ULID()), "png"),  # uploads in flight: objects, no item yet
        objects.thumb_key("user_0", str(ULID())),
        objects.image_key("user_3", str(ULID()), "png"),
        f"archives/user_0/{ULID()}.zip",  # a fresh archive
    ):
        stamp = _put(key)
        t2 = stamp if t2 is None else min(t2, stamp)
        data.keep_keys.add(key)
    assert t2 > t1, "the second wave must be strictly newer"
    mid = t1 + (t2 - t1) / 2
    data.now_hour = mid + cleanup.ORPHAN_MIN_AGE
    data.now_day = mid + cleanup.ARCHIVE_MAX_AGE
    assert _all_keys() == data.keep_keys | data.gone_keys
    assert _all_items() == data.keep_items | data.gone_items
    return data


def _sweeps(data: Dataset, dry_run: bool = False) -> list[Callable[[], object]]:
    """Every sweep, each with the ``now`` that makes wave 1 old and wave 2 young."""
    return [
        lambda: cleanup.sweep_retention(now=data.now_hour, retention_days=RETENTION_DAYS, dry_run=dry_run),
        lambda: cleanup.sweep_orphan_objects(now=data.now_hour, dry_run=dry_run),
        lambda: cleanup.sweep_orphan_metadata(now=data.now_hour, dry_run=dry_run),
        lambda: cleanup.sweep_archives(now=data.now_day, dry_run=dry_run),
    ]


def _assert_exactly_expired_and_orphaned_gone(data: Dataset) -> None:
    assert _all_items() == data.keep_items
    assert _all_keys() == data.keep_keys


def test_sweeps_delete_exactly_expired_and_orphaned_data(dataset: Dataset) -> None:
    reports = [sweep() for sweep in _sweeps(dataset)]
    _assert_exactly_expired_and_orphaned_gone(dataset)
    assert all(r.complete and not r.dry_run for r in reports)
    retention, orphan_objects, orphan_metadata, archives = reports
    assert retention.counts["images_deleted"] == 5
    assert retention.counts["objects_deleted"] == 10
    assert orphan_objects.counts["objects_deleted"] == 4  # 3 orphans + the stray
    assert orphan_objects.counts["kept_young"] == 3
    assert orphan_objects.counts["unrecognized"] == 1
    assert orphan_metadata.counts["images_deleted"] == 2
    assert orphan_metadata.counts["objects_deleted"] == 1  # the thumbnail of an image without original
    assert orphan_metadata.counts["missing_thumbnail"] == 1
    assert archives.counts["objects_deleted"] == 3
    assert archives.counts["kept_young"] == 1
    # a second run finds nothing left to delete
    again = [sweep() for sweep in _sweeps(dataset)]
    assert sum(r.counts["images_deleted"] + r.counts["objects_deleted"] for r in again) == 0
    _assert_exactly_expired_and_orphaned_gone(dataset)


def test_sweeps_twice_at_once_in_threads(dataset: Dataset) -> None:
    sweeps = _sweeps(dataset) * 2
    with ThreadPoolExecutor(max_workers=len(sweeps)) as pool:
        reports = list(pool.map(lambda sweep: sweep(), sweeps))
    _assert_exactly_expired_and_orphaned_gone(dataset)
    assert all(r.counts["errors"] == 0 for r in reports)
    # each image item was removed by exactly one of the two concurrent runs
    retention = [r for r in reports if r.sweep == "retention"]
    assert sum(r.counts["images_deleted"] for r in retention) == 5
    metadata = [r for r in reports if r.sweep == "orphan_metadata"]
    assert sum(r.counts["images_deleted"] for r in metadata) == 2


def test_dry_run_changes_nothing(dataset: Dataset) -> None:
    reports = [sweep() for sweep in _sweeps(dataset, dry_run=True)]
    assert _all_keys() == dataset.keep_keys | dataset.gone_keys
    assert _all_items() == dataset.keep_items | dataset.gone_items
    retention, orphan_objects, orphan_metadata, archives = reports
    assert all(r.dry_run for r in reports)
    assert retention.counts["would_delete_images"] == 5
    assert orphan_objects.counts["would_delete_objects"] == 4
    assert orphan_metadata.counts["would_delete_images"] == 2
    assert archives.counts["would_delete_objects"] == 3
    assert not any(r.counts["images_deleted"] or r.counts["objects_deleted"] for r in reports)


def test_dry_run_from_settings(aws, monkeypatch) -> None:
    item = _image("user_9", datetime.now(UTC) - timedelta(days=90))
    monkeypatch.setenv("CLEANUP_DRY_RUN", "true")
    monkeypatch.setenv("IMAGE_RETENTION_DAYS", "7")
    get_settings.cache_clear()
    try:
        report = cleanup.sweep_retention()
    finally:
        monkeypatch.delenv("CLEANUP_DRY_RUN")
        monkeypatch.delenv("IMAGE_RETENTION_DAYS")
        get_settings.cache_clear()
    assert report.dry_run and report.counts["would_delete_images"] == 1
    assert _all_items() == {(item.user_id, item.image_id)}


def test_object_age_rule(aws) -> None:
    key = objects.image_key("user_a", str(ULID()), "png")
    written = _put(key)
    young = cleanup.sweep_orphan_objects(now=written + timedelta(minutes=59))
    assert young.counts["kept_young"] == 1 and key in _all_keys()
    old = cleanup.sweep_orphan_objects(now=written + timedelta(minutes=61))
    assert old.counts["objects_deleted"] == 1 and key not in _all_keys()


def test_archive_age_rule(aws) -> None:
    key = f"archives/user_a/{ULID()}.zip"
    written = _put(key)
    assert cleanup.sweep_archives(now=written + timedelta(hours=23)).counts["kept_young"] == 1
    assert key in _all_keys()
    assert cleanup.sweep_archives(now=written + timedelta(hours=25)).counts["objects_deleted"] == 1
    assert key not in _all_keys()


def test_retention_zero_keeps_everything(aws) -> None:
    item = _image("user_a", datetime.now(UTC) - timedelta(days=3650))
    report = cleanup.sweep_retention(retention_days=0)
    assert report.counts == {"disabled": 1}
    assert _all_items() == {(item.user_id, item.image_id)}
    assert {item.s3_key, item.thumb_key} <= _all_keys()


def test_pagination(aws, monkeypatch) -> None:
    """Pages of 2 objects / 2 items still reach everything."""
    monkeypatch.setattr(cleanup, "LIST_PAGE_SIZE", 2)
    monkeypatch.setattr(cleanup, "SCAN_PAGE_SIZE", 2)
    now = datetime.now(UTC)
    expired = [_image(f"user_{n}", now - timedelta(days=60)) for n in range(5)]
    live = [_image(f"user_{n}", now) for n in range(3)]
    orphans = [objects.image_key("user_x", str(ULID()), "png") for _ in range(5)]
    for key in orphans:
        _put(key)
    later = now + timedelta(hours=2)
    assert cleanup.sweep_retention(now=later, retention_days=30).counts["images_deleted"] == 5
    report = cleanup.sweep_orphan_objects(now=later)
    assert report.counts["objects_deleted"] == 5 and report.counts["listed"] == 11
    assert _all_items() == {(i.user_id, i.image_id) for i in live}
    assert not any(k in _all_keys() for i in expired for k in (i.s3_key, i.thumb_key))


def test_time_budget_stops_the_sweep(aws) -> None:
    _image("user_a", datetime.now(UTC) - timedelta(days=60))
    orphan = objects.image_key("user_a", str(ULID()), "png")
    _put(orphan)
    later = datetime.now(UTC) + timedelta(hours=2)
    reports = [
        cleanup.sweep_retention(now=later, retention_days=30, budget_s=0),
        cleanup.sweep_orphan_objects(now=later, budget_s=0),
        cleanup.sweep_orphan_metadata(now=later, budget_s=0),
        cleanup.sweep_archives(now=later, budget_s=0),
    ]
    assert all(not r.complete for r in reports)
    assert len(_all_items()) == 1 and orphan in _all_keys()


def test_naive_now_is_rejected(aws) -> None:
    with pytest.raises(ValueError):
        cleanup.sweep_archives(now=datetime(2030, 1, 1))


def test_scheduled_handlers_run(aws) -> None:
    """The @app.schedule handlers, invoked as Lambda would with a CloudWatch event."""
    import os

    from chalice.test import Client

    import app as app_module

    item = _image("user_a", datetime.now(UTC))
    project_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with Client(app_module.app, stage_name="local", project_dir=project_dir) as chalice_client:
        event = chalice_client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        for name in ("cleanup_retention", "cleanup_archives", "cleanup_orphans", "emit_gauges"):
            result = chalice_client.lambda_.invoke(name, event).payload
            assert result, name
    assert _all_items() == {(item.user_id, item.image_id)}


# -- observability: the sweeps' logs and the gauges ------------------------------------------------


def test_logs_are_json_with_context_and_without_secrets() -> None:
    import io
    import json
    import logging

    from chalicelib import observability

    logger = observability.get_logger()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)  # the Logger's own formatter, into a buffer we can read
    handler.setFormatter(logger.registered_handler.formatter)
    logger._logger.addHandler(handler)

    key = "tgp_v1_" + "k" * 40
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEifQ.c2lnbmF0dXJl"
    observability.bind(request_id="req-1", user_id="user_1", job_id="job_1")
    try:
        logger.info(
            f"calling with {key} and Bearer {token}",
            extra={
                "authorization": f"Bearer {token}",
                "api_key": key,
                "url": "https://s3.amazonaws.com/b/k?X-Amz-Credential=AKIA123&X-Amz-Signature=abc123&X-Amz-Security-Token=xyz",
                "key_id": "0123456789ab",
                "detail": {"nested_token": token, "hex": "a" * 64},
            },
        )
        observability.clear()
        logger.info("after")
    finally:
        logger._logger.removeHandler(handler)
    first, after = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert (first["request_id"], first["user_id"], first["job_id"]) == ("req-1", "user_1", "job_1")
    text = json.dumps(first)
    for secret in (key, token, "AKIA123", "abc123", "xyz", "a" * 64):
        assert secret not in text, secret
    assert first["key_id"] == "0123456789ab"
    assert "user_id" not in after and "request_id" not in after


def test_key_state_gauges_and_counts() -> None:
    from chalicelib import observability

    counts = observability.record_key_states(["healthy", "cooling", "disabled", "out_of_credits", "healthy"])
    assert counts == {
        "HealthyKeys": 2,
        "CoolingKeys": 1,
        "DisabledKeys": 1,
        "OutOfCreditsKeys": 1,
        "TotalKeys": 5,
    }
    assert observability.record_key_states([])["HealthyKeys"] == 0
    observability.record_counts("CleanupRetention", {"images_deleted": 3})
    metrics = observability.get_metrics().metric_set
    assert metrics["CleanupRetentionImagesDeleted"]["Value"][-1] == 3.0
    observability.flush_metrics()  # outside Lambda: discarded, nothing printed
    assert not observability.get_metrics().metric_set


def test_collect_gauges(aws, monkeypatch) -> None:
    from chalicelib.flux.keypool import reset_key_pool
    from chalicelib.services import gauges

    monkeypatch.setenv("TOGETHER_API_KEYS", "key-one,key-two")
    get_settings.cache_clear()
    reset_key_pool()
    try:
        sqs = client("sqs")
        url = sqs.get_queue_url(QueueName=get_settings().jobs_queue_name)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="{}")
        result = gauges.collect()
    finally:
        monkeypatch.delenv("TOGETHER_API_KEYS")
        get_settings.cache_clear()
        reset_key_pool()
    assert result["errors"] == []
    assert result["keys"]["HealthyKeys"] == 2 and result["keys"]["TotalKeys"] == 2
    assert result["queue"]["depth"] == 1 and result["queue"]["oldest_age_s"] == 0


def _collection_counts(api, user: str) -> dict[str, int]:
    listed = api.get("/v1/collections", user=user).json
    return {c["name"]: c["image_count"] for c in listed["collections"]}


def test_collection_counts_follow_stores_deletes_and_sweeps(api) -> None:
    """The collection counters move with the items: generated (route), deleted (route),
    removed by retention and by the orphan-metadata sweep; the list is read from them."""

    from chalicelib.db.images import save_new_image

    prompt = parti_prompts()[300]
    made = api.post(
        "/v1/images",
        user="counter",
        json_body={"prompt": prompt, "n": 2, "width": 256, "height": 256, "collection": "harbor"},
    )
    assert made.status == 201, made.body
    assert _collection_counts(api, "counter") == {"harbor": 2}
    assert api.delete(f"/v1/images/{made.json['images'][0]['id']}", user="counter").status == 204
    assert api.delete(f"/v1/images/{made.json['images'][0]['id']}", user="counter").status == 404
    assert _collection_counts(api, "counter") == {"harbor": 1}
    now = datetime.now(UTC)
    old = []
    for _ in range(2):  # two images past retention, stored through the counted write path
        item = _image("counter", now - timedelta(days=RETENTION_DAYS + 2))
        item.delete()
        item.collection, item.user_collection = "harbor", "counter#harbor"
        save_new_image(item)
        old.append(item)
    assert _collection_counts(api, "counter") == {"harbor": 3}
    for _ in range(2):  # a second run finds nothing more to count down
        cleanup.sweep_retention(now=now, retention_days=RETENTION_DAYS, dry_run=False)
    assert _collection_counts(api, "counter") == {"harbor": 1}
    kept = ImageModel.get("counter", made.json["images"][1]["id"])
    client("s3").delete_object(Bucket=get_settings().images_bucket, Key=kept.s3_key)
    for _ in range(2):
        cleanup.sweep_orphan_metadata(now=now, dry_run=False)
    assert _collection_counts(api, "counter") == {}
    assert _collection_counts(api, "someone-else") == {}


def test_rebuild_collection_counts_fills_counters_for_images_stored_before_them(aws) -> None:
    """Images written without counters (as before the counters existed) are counted by
    the one-off rebuild, which can run twice."""
    from chalicelib.db.images import collection_counts

    now = datetime.now(UTC)
    for user, collection, n in (("old-a", "boats", 3), ("old-a", "birds", 1), ("old-b", "boats", 2)):
        for _ in range(n):
            item = _image(user, now)
            item.update(
                actions=[ImageModel.collection.set(collection), ImageModel.user_collection.set(f"{user}#{collection}")]
            )
    _image("old-a", now)  # in no collection
    assert collection_counts("old-a") == {}
    for _ in range(2):
        assert cleanup.rebuild_collection_counts() == {"images": 7, "counters": 3}
    assert collection_counts("old-a") == {"boats": 3, "birds": 1}
    assert collection_counts("old-b") == {"boats": 2}
