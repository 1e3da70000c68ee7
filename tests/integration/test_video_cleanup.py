"""The video cleanup sweeps against the moto server over HTTP (fixture ``aws``): retention of
ended videos, orphan video files and posters, and videos stuck past their deadline (failed
with ``deadline``, their quota unit given back exactly once). Ages come from ``created_at`` /
``deadline_at`` on the items and from ``now`` passed into the sweeps (S3 ``LastModified`` is
the server's clock; nothing is patched)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from ulid import ULID

from chalicelib.aws import client
from chalicelib.db import UsageModel, VideoModel
from chalicelib.flux.video_catalog import parse_video_params
from chalicelib.services import cleanup, usage, video_worker
from chalicelib.settings import get_settings
from chalicelib.storage import objects
from devstack.prompts import parti_prompts

RETENTION_DAYS = 30
REQUEST = {"model": "pixverse/pixverse-v5", "width": 360, "height": 360}


def _put(key: str, body: bytes = b"x") -> datetime:
    """Write one object; returns its LastModified as the server recorded it."""
    s3 = client("s3")
    bucket = get_settings().images_bucket
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return s3.head_object(Bucket=bucket, Key=key)["LastModified"]


def _all_keys() -> set[str]:
    pages = client("s3").get_paginator("list_objects_v2").paginate(Bucket=get_settings().images_bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def _all_videos() -> dict[tuple[str, str], VideoModel]:
    return {(v.user_id, v.video_id): v for v in VideoModel.scan(consistent_read=True)}


def _video(
    user_id: str,
    status: str,
    *,
    created_at: datetime | None = None,
    deadline_at: float | None = None,
    file: bool = False,
    poster: bool = False,
    quota_period: str | None = None,
    n: int = 0,
) -> VideoModel:
    """Seed one video item in ``status``, with its file and poster objects as chosen."""
    params = parse_video_params({"prompt": parti_prompts()[n % 50], **REQUEST})
    video_id = str(ULID())
    file_key, poster_key = objects.video_key(user_id, video_id), objects.poster_key(user_id, video_id)
    if file:
        _put(file_key)
    if poster:
        _put(poster_key)
    now = datetime.now(UTC)
    item = VideoModel(
        user_id,
        video_id,
        status=status,
        params=json.dumps(params.to_record()),
        prompt=params.prompt,
        model=params.model,
        poster_key=poster_key if poster else None,
        s3_key=file_key if status == "completed" and file else None,
        upstream_id="job-1" if status == "rendering" else None,
        deadline_at=int(deadline_at if deadline_at is not None else time.time() + 3600),
        estimated_cost_usd=params.estimated_cost_usd,
        quota_period=quota_period,
        created_at=created_at or now,
        completed_at=now if status in ("completed", "failed") else None,
    )
    item.save()
    return item


def _used(user_id: str) -> int:
    try:
        return int(UsageModel.get(user_id, usage.current_month(), consistent_read=True).count or 0)
    except UsageModel.DoesNotExist:
        return 0


# -- retention --------------------------------------------------------------------------------------


@pytest.fixture
def aged(aws) -> dict[str, VideoModel]:
    """Ended videos past retention (completed with file and poster, failed with a poster),
    a running one past retention, and a completed one inside it."""
    now = datetime.now(UTC)
    old = now - timedelta(days=RETENTION_DAYS + 1)
    return {
        "old_completed": _video("user_a", "completed", created_at=old, file=True, poster=True),
        "old_failed": _video("user_b", "failed", created_at=old, poster=True, n=1),
        "old_running": _video("user_a", "rendering", created_at=old, n=2),
        "live": _video("user_a", "completed", created_at=now - timedelta(days=RETENTION_DAYS - 1), file=True, n=3),
    }


def test_video_retention_deletes_ended_videos_past_retention_with_their_objects(aged) -> None:
    keys_before = _all_keys()
    report = cleanup.sweep_video_retention(retention_days=RETENTION_DAYS, dry_run=False)
    assert report.complete and report.counts["videos_deleted"] == 2
    assert set(_all_videos()) == {
        (aged[k].user_id, aged[k].video_id) for k in ("old_running", "live")
    }  # a running video is the stuck sweep's
    gone = {
        objects.video_key("user_a", aged["old_completed"].video_id),
        objects.poster_key("user_a", aged["old_completed"].video_id),
        objects.poster_key("user_b", aged["old_failed"].video_id),
    }
    assert _all_keys() == keys_before - gone
    again = cleanup.sweep_video_retention(retention_days=RETENTION_DAYS, dry_run=False)
    assert again.counts["videos_deleted"] == 0 and again.counts["objects_deleted"] == 0


def test_video_retention_dry_run_changes_nothing(aged) -> None:
    keys_before, videos_before = _all_keys(), set(_all_videos())
    report = cleanup.sweep_video_retention(retention_days=RETENTION_DAYS, dry_run=True)
    assert report.dry_run and report.counts["would_delete_videos"] == 2
    assert not report.counts["videos_deleted"] and not report.counts["objects_deleted"]
    assert _all_keys() == keys_before and set(_all_videos()) == videos_before


def test_video_retention_zero_keeps_everything(aged) -> None:
    assert cleanup.sweep_video_retention(retention_days=0, dry_run=False).counts == {"disabled": 1}
    assert len(_all_videos()) == 4


@pytest.mark.parametrize(
    ("env", "days"),
    [({"IMAGE_RETENTION_DAYS": "7"}, 7), ({"IMAGE_RETENTION_DAYS": "7", "VIDEO_RETENTION_DAYS": "0"}, 0), ({}, 0)],
)
def test_video_retention_days_follow_image_retention_unless_set(aged, monkeypatch, env, days) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert get_settings().video_retention_days == days
        report = cleanup.sweep_video_retention(dry_run=True)
    finally:
        for name in env:
            monkeypatch.delenv(name)
        get_settings.cache_clear()
    # 7 days: the three ended videos (the running one is left to the stuck sweep)
    expected = {"scanned_expired": 3, "would_delete_videos": 3, "would_delete_objects": 6}
    assert report.counts == ({"disabled": 1} if days == 0 else expected)


def test_scheduled_retention_handler_sweeps_videos(aged, monkeypatch) -> None:
    import os

    from chalice.test import Client

    import app as app_module

    monkeypatch.setenv("VIDEO_RETENTION_DAYS", str(RETENTION_DAYS))
    get_settings.cache_clear()
    project_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        with Client(app_module.app, stage_name="local", project_dir=project_dir) as chalice_client:
            event = chalice_client.events.generate_cw_event(
                source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
            )
            reports = chalice_client.lambda_.invoke("cleanup_retention", event).payload
            stuck = chalice_client.lambda_.invoke("cleanup_stuck_videos", event).payload
    finally:
        monkeypatch.delenv("VIDEO_RETENTION_DAYS")
        get_settings.cache_clear()
    videos = next(r for r in reports if r["sweep"] == "video_retention")
    assert videos["counts"]["videos_deleted"] == 2
    assert stuck["sweep"] == "stuck_videos" and stuck["complete"]


# -- orphans ----------------------------------------------------------------------------------------


def test_orphan_sweep_deletes_video_objects_no_video_item_references(aws) -> None:
    gone_user = "user_o"
    orphan_file, orphan_poster = (
        objects.video_key(gone_user, str(ULID())),
        objects.poster_key(gone_user, str(ULID())),
    )
    written = _put(orphan_file)
    _put(orphan_poster)
    completed = _video("user_o", "completed", file=True, poster=True)
    rendering = _video("user_o", "rendering", file=True, n=1)  # file written, item not yet updated
    failed = _video("user_o", "failed", file=True, poster=True, n=2)  # a file no video will show
    kept = {
        completed.s3_key,
        completed.poster_key,
        objects.video_key("user_o", rendering.video_id),
        failed.poster_key,
    }
    gone = {orphan_file, orphan_poster, objects.video_key("user_o", failed.video_id)}
    assert _all_keys() == kept | gone

    young = cleanup.sweep_orphan_objects(now=written + timedelta(minutes=30), dry_run=False)
    assert young.counts["kept_young"] == 7 and _all_keys() == kept | gone

    later = written + timedelta(hours=2)
    dry = cleanup.sweep_orphan_objects(now=later, dry_run=True)
    assert dry.counts["would_delete_objects"] == 3 and dry.counts["video_orphans"] == 3
    assert _all_keys() == kept | gone

    report = cleanup.sweep_orphan_objects(now=later, dry_run=False)
    assert report.counts["objects_deleted"] == 3 and report.counts["kept_referenced"] == 4
    assert report.counts["unrecognized"] == 0
    assert _all_keys() == kept
    assert len(_all_videos()) == 3


# -- stuck videos -----------------------------------------------------------------------------------


def test_stuck_videos_fail_with_deadline_and_their_quota_comes_back(aws) -> None:
    user = "user_s"
    now = time.time()
    usage.charge(user, 3)  # charges that are not these videos': never given back
    videos = {}
    for n, (name, status, deadline_at) in enumerate(
        [
            ("stuck_rendering", "rendering", now - 3600),
            ("stuck_queued", "queued", now - 20 * 60),
            ("stuck_submitting", "submitting", now - 7200),
            ("in_grace", "rendering", now - 5 * 60),  # a live worker fails it at its next delivery
            ("running", "rendering", now + 600),
            ("ended", "completed", now - 7200),
        ]
    ):
        period = usage.charge(user, 1)
        videos[name] = _video(user, status, deadline_at=deadline_at, quota_period=period, n=n)
    assert _used(user) == 9

    dry = cleanup.sweep_stuck_videos(dry_run=True)
    assert dry.counts["would_fail_videos"] == 3 and _used(user) == 9
    assert {v.status for v in _all_videos().values()} == {"rendering", "queued", "submitting", "completed"}

    report = cleanup.sweep_stuck_videos(dry_run=False)
    assert report.complete and report.counts["videos_failed"] == 3
    after = {v.video_id: v for v in _all_videos().values()}
    for name in ("stuck_rendering", "stuck_queued", "stuck_submitting"):
        item = after[videos[name].video_id]
        assert (item.status, item.error_code) == ("failed", "deadline")
    assert [after[videos[n].video_id].status for n in ("in_grace", "running", "ended")] == [
        "rendering",
        "rendering",
        "completed",
    ]
    assert _used(user) == 6
    again = cleanup.sweep_stuck_videos(dry_run=False)
    assert again.counts["videos_failed"] == 0 and _used(user) == 6


def test_sweeps_and_a_live_worker_at_once_refund_each_stuck_video_once(aws) -> None:
    """Two sweeps and the worker's own delivery of every video race to fail the same
    videos; each video is failed and refunded by exactly one of them."""
    user = "user_r"
    usage.charge(user, 4)  # a floor a double refund would dig into
    stuck = [
        _video(user, "rendering", deadline_at=time.time() - 3600, quota_period=usage.charge(user, 1), n=n)
        for n in range(6)
    ]
    assert _used(user) == 10

    def worker(item: VideoModel) -> str:
        return video_worker.handle_video(
            {"type": "video", "user_id": item.user_id, "video_id": item.video_id}, time.monotonic() + 60
        ).note

    with ThreadPoolExecutor(max_workers=8) as pool:
        sweeps = [pool.submit(cleanup.sweep_stuck_videos, dry_run=False) for _ in range(2)]
        notes = list(pool.map(worker, stuck))
        reports = [s.result() for s in sweeps]
    failed_by_sweeps = sum(r.counts["videos_failed"] for r in reports)
    assert failed_by_sweeps + notes.count("failed") == len(stuck)
    assert all(r.counts["errors"] == 0 for r in reports)
    assert {(v.status, v.error_code) for v in _all_videos().values()} == {("failed", "deadline")}
    assert _used(user) == 4
