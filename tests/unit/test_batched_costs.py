"""``usage.batched_costs``: a worker batch's image costs are written once per spend item."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.services import usage


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, float, int]]:
    """The spend writes made, as ``(hash key, range key, usd, images)``, instead of UpdateItems."""
    made: list[tuple[str, str, float, int]] = []
    monkeypatch.setattr(usage, "_add_spend", lambda h, r, usd, n: made.append((h, r, usd, n)))
    monkeypatch.setattr(usage, "_month", lambda: "2026-12")
    return made


def test_outside_a_batch_each_cost_is_written_at_once(writes):
    usage.add_cost("u1", 0.0027, model="black-forest-labs/FLUX.1-schnell", key_id="k1")
    assert sorted(writes) == [
        ("@spend#2026-12", "k1", 0.0027, 1),
        ("u1", "2026-12", 0.0027, 0),
        ("u1", "spend#2026-12#shared#black-forest-labs/FLUX.1-schnell", 0.0027, 1),
    ]


def test_a_batch_of_ten_images_from_four_threads_is_three_writes(writes):
    model = "black-forest-labs/FLUX.1-schnell"
    with usage.batched_costs():
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: usage.add_cost("u1", 0.0027, model=model, key_id="k1"), range(10)))
        assert writes == []  # nothing written before the batch ends
    assert sorted(writes) == [
        ("@spend#2026-12", "k1", 0.027, 10),
        ("u1", "2026-12", 0.027, 0),
        ("u1", f"spend#2026-12#shared#{model}", 0.027, 10),
    ]


def test_users_keys_and_own_keys_keep_their_own_items(writes):
    with usage.batched_costs():
        usage.add_cost("u1", 0.01, model="m", key_id="k1")
        usage.add_cost("u2", 0.02, model="m", key_id="k1")
        usage.add_cost("u2", 0.04, model="m", key_id="own:abc", own=True)
    assert sorted(writes) == [
        ("@spend#2026-12", "k1", 0.03, 2),
        ("@spend#2026-12", "own:abc", 0.04, 1),
        ("u1", "2026-12", 0.01, 0),
        ("u1", "spend#2026-12#shared#m", 0.01, 1),
        ("u2", "2026-12", 0.02, 0),  # an own-key image is billed to the user's own account
        ("u2", "spend#2026-12#own#m", 0.04, 1),
        ("u2", "spend#2026-12#shared#m", 0.02, 1),
    ]


def test_a_nested_block_adds_to_the_outer_one_and_an_exception_still_writes(writes):
    with pytest.raises(RuntimeError), usage.batched_costs():
        with usage.batched_costs():
            usage.add_cost("u1", 0.01, model="m")
        assert writes == []
        raise RuntimeError("a handler failed")
    assert sorted(writes) == [("u1", "2026-12", 0.01, 0), ("u1", "spend#2026-12#shared#m", 0.01, 1)]
    usage.add_cost("u1", 0.01, model="m")  # the block is closed: written at once again
    assert len(writes) == 4
