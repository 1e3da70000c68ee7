"""Parsing and validating a job submission, before anything is written."""

from __future__ import annotations

import json

import pytest

from chalicelib.errors import DomainError
from chalicelib.jobs.submit import build_submission, parse_idempotency_key, parse_request
from chalicelib.settings import get_settings

PROMPTS = ["a lighthouse on a cliff at dusk", "a bowl of ramen, studio lighting"]


def parse(body: dict) -> object:
    return parse_request("application/json", json.dumps(body).encode())


def test_a_prompt_list_makes_one_item_each() -> None:
    sub = parse({"prompts": PROMPTS, "width": 256, "height": 256, "name": "  two   prompts "})
    assert sub.prompts == PROMPTS and sub.source == "prompts"
    assert sub.name == "two prompts"
    assert sub.params["width"] == 256 and "prompt" not in sub.params
    assert len(sub.seeds) == 2


def test_a_prompt_with_count_and_n_expands() -> None:
    sub = parse({"prompt": PROMPTS[0], "count": 3, "n": 2})
    assert sub.prompts == [PROMPTS[0]] * 6 and sub.source == "count"


def test_a_seed_makes_the_seeds_reproducible() -> None:
    first = parse({"prompts": PROMPTS, "seed": 41})
    assert first.seeds == [41, 42]
    assert parse({"prompts": PROMPTS, "seed": 41}).request_hash == first.request_hash
    assert parse({"prompts": PROMPTS, "seed": 42}).request_hash != first.request_hash


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompts": PROMPTS, "prompt": "x"}, "prompt"),
        ({"prompts": PROMPTS, "count": 2}, "count"),
        ({"prompts": "not a list"}, "prompts"),
        ({"prompts": []}, "prompts"),
        ({"prompts": [PROMPTS[0], 7]}, "prompts[1]"),
        ({"prompt": PROMPTS[0], "count": 0}, "count"),
        ({"prompt": PROMPTS[0], "count": True}, "count"),
        ({}, "prompts"),
        ({"prompts": PROMPTS, "name": 5}, "name"),
        ({"prompts": PROMPTS, "colour": "red"}, "colour"),
    ],
)
def test_bad_input_names_the_field(body: dict, field: str) -> None:
    with pytest.raises(DomainError) as info:
        parse(body)
    assert info.value.field == field


def test_the_item_limit_counts_n() -> None:
    maximum = get_settings().jobs_max_items
    with pytest.raises(DomainError) as info:
        parse({"prompt": PROMPTS[0], "count": maximum, "n": 2})
    assert info.value.field == "count"


def test_body_size_and_media_type() -> None:
    with pytest.raises(DomainError) as info:
        parse_request("application/json", b" " * (get_settings().jobs_max_body_bytes + 1))
    assert info.value.code == "body-too-large"
    with pytest.raises(DomainError) as info:
        parse_request("text/plain", b"{}")
    assert info.value.code == "unsupported-media-type"
    with pytest.raises(DomainError) as info:
        parse_request("application/json", b"[1, 2]")
    assert info.value.code == "invalid-json"


def test_file_prompts_keep_their_line_labels() -> None:
    with pytest.raises(DomainError) as info:
        build_submission({}, [("file", "file line 2", 7)], source="file")
    assert info.value.field == "file" and "file line 2" in info.value.message


def test_idempotency_keys() -> None:
    assert parse_idempotency_key(None) is None
    assert parse_idempotency_key("  order-42 ") == "order-42"
    for bad in ("", "   ", "has space", "x" * 256, "caf\u00e9"):
        with pytest.raises(DomainError) as info:
            parse_idempotency_key(bad)
        assert info.value.field == "Idempotency-Key"
