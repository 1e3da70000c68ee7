"""The video worker's poll interval: from VIDEO_POLL_MIN_SECONDS, doubling, capped at a minute."""

from __future__ import annotations

from chalicelib.services.video_worker import poll_delay_s


def test_polls_back_off_from_seconds_to_a_minute() -> None:
    delays = [poll_delay_s(n) for n in range(10)]
    assert delays[:6] == [2, 4, 8, 16, 32, 60]
    assert set(delays[5:]) == {60}
    assert poll_delay_s(10_000) == 60  # no overflow however many polls
