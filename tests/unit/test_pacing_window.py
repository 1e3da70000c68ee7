"""The pacer's sustained-rate window: the longest reset seen holds for a few windows, then a
shorter window (or a raised limit) is picked up."""

from __future__ import annotations

import pytest

from chalicelib.flux.pacing import PACE_JITTER_S, PACE_MARGIN, WINDOW_MEMORY, Pacer, RateInfo

KEY, MODEL = "k1", "black-forest-labs/FLUX.1-schnell"


def interval(pacer: Pacer) -> float:
    return (pacer._pace[(KEY, MODEL)].interval - PACE_JITTER_S / 60) / (1 + PACE_MARGIN)  # every limit here is 60


def test_a_short_reset_right_after_a_long_one_keeps_the_long_windows_pace():
    pacer = Pacer()
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=59, reset_s=60.0), now=1000.0)
    assert interval(pacer) == pytest.approx(60.0 / 59)  # 59 units left of a minute's 60
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=30, reset_s=10.0), now=1010.0)
    assert interval(pacer) == pytest.approx(1.0)  # a short reset is no faster than 60 a minute


def test_the_only_send_in_a_window_measures_its_length_even_when_it_shrank():
    pacer = Pacer()
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=30, reset_s=60.0), now=1000.0)
    assert interval(pacer) == pytest.approx(2.0)  # 30 units left of a minute
    # limit - 1 left: this send was alone in its window, whose whole length is the reset
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=59, reset_s=10.0), now=1020.0)
    assert interval(pacer) == pytest.approx(10.0 / 59)
    # later short resets of a busier window are held to the measured 60 per 10 s, not a burst
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=50, reset_s=1.0), now=1021.0)
    assert interval(pacer) == pytest.approx(10.0 / 60)


def test_a_window_not_seen_again_for_a_few_windows_gives_way_to_the_shorter_one():
    pacer = Pacer()
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=59, reset_s=60.0), now=1000.0)
    later = 1000.0 + WINDOW_MEMORY * 60.0 + 1.0
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=40, reset_s=10.0), now=later)
    assert interval(pacer) == pytest.approx(10.0 / 40)  # now 60 units per 10 s, 40 of them left
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=59, reset_s=60.0), now=later + 1)
    assert interval(pacer) == pytest.approx(60.0 / 59)  # a long reset again: the slower pace


def test_a_whole_second_reset_counts_as_rounded_so_a_nearly_full_window_keeps_its_pace():
    # 2 units left and the oldest frees "in 2 s": rounded up, so within 1-2 s. Spreading the
    # units over the whole 2 s would send every 1.0 s at once... and over a rounded 3 s every 1.5 s
    pacer = Pacer()
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=59, reset_s=60.0), now=1000.0)
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=2, reset_s=3.0, reset_rounded=True), now=1060.0)
    assert interval(pacer) == pytest.approx(1.0)  # (3 - 1) / 2, no slower than the sustained 60 a minute
    # a reset written with decimals is exact: 2 units over 3.4 s
    pacer.observe(KEY, MODEL, RateInfo(limit=60, remaining=2, reset_s=3.4), now=1061.0)
    assert interval(pacer) == pytest.approx(3.4 / 2)


def test_the_reset_is_read_as_rounded_only_when_written_in_whole_seconds():
    assert RateInfo.from_headers({"x-ratelimit-remaining": "2", "x-ratelimit-reset": "3"}).reset_rounded
    exact = RateInfo.from_headers({"x-ratelimit-remaining": "2", "x-ratelimit-reset": "3.00"})
    assert exact.reset_s == 3.0 and not exact.reset_rounded


def test_the_jitter_allowance_is_spread_over_the_windows_limit():
    def padding(limit: int, window: float) -> float:
        pacer = Pacer()  # a lone send: the window's length, all but one unit left
        pacer.observe(KEY, MODEL, RateInfo(limit=limit, remaining=limit - 1, reset_s=window), now=1000.0)
        spacing = window / (limit - 1)
        return pacer._pace[(KEY, MODEL)].interval / spacing - 1

    # a send arriving late by up to PACE_JITTER_S shifts one unit of a full window: two units per
    # 3 s need a few percent more room, sixty a minute a fraction of one
    assert padding(2, 3.0) == pytest.approx(PACE_MARGIN + PACE_JITTER_S / 2 / 3.0)
    assert padding(60, 60.0) == pytest.approx(PACE_MARGIN + PACE_JITTER_S / 60 / (60.0 / 59))
    assert padding(2, 3.0) > 0.02 > 0.01 > padding(60, 60.0)
