"""The cleanup schedules' compositions: the image and upload sweeps run together.

:func:`sweep_orphans` runs every orphan sweep under one time budget (the daily
``cleanup_orphans`` schedule); :func:`run_all` runs every sweep once (operators, tests).
The sweeps themselves are in :mod:`chalicelib.services.cleanup` (images, archives) and
:mod:`chalicelib.services.upload_cleanup` (uploads).
"""

from __future__ import annotations

import time
from datetime import datetime

from chalicelib.services import cleanup, upload_cleanup
from chalicelib.sweeps import SweepReport


def sweep_orphans(
    *,
    now: datetime | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
) -> list[SweepReport]:
    """The orphan sweeps, sharing one time budget: image objects, image metadata, then
    uploads (``chalicelib.services.upload_cleanup``)."""
    deadline_start = time.monotonic()

    def left() -> float | None:
        return None if budget_s is None else budget_s - (time.monotonic() - deadline_start)

    first = cleanup.sweep_orphan_objects(now=now, dry_run=dry_run, budget_s=budget_s)
    second = cleanup.sweep_orphan_metadata(now=now, dry_run=dry_run, budget_s=left())
    third = upload_cleanup.sweep_upload_orphans(now=now, dry_run=dry_run, budget_s=left())
    return [first, second, third]


# -- archives -------------------------------------------------------------------------------------


def run_all(
    *, now: datetime | None = None, dry_run: bool | None = None, budget_s: float | None = None
) -> list[SweepReport]:
    """Every sweep once, in order retention (images, uploads, videos), stuck videos, orphans,
    archives, shares (each with ``budget_s``). For operators and tests; the schedules run
    them separately."""
    return [
        cleanup.sweep_retention(now=now, dry_run=dry_run, budget_s=budget_s),
        upload_cleanup.sweep_upload_retention(now=now, dry_run=dry_run, budget_s=budget_s),
        cleanup.sweep_video_retention(now=now, dry_run=dry_run, budget_s=budget_s),
        cleanup.sweep_stuck_videos(now=now, dry_run=dry_run, budget_s=budget_s),
        *sweep_orphans(now=now, dry_run=dry_run, budget_s=budget_s),
        cleanup.sweep_archives(now=now, dry_run=dry_run, budget_s=budget_s),
        cleanup.sweep_shares(now=now, dry_run=dry_run, budget_s=budget_s),
    ]
