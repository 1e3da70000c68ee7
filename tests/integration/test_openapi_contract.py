"""The OpenAPI document and the API agree: what the document allows is accepted, what it
forbids is a 4xx.

- ``test_schemathesis_finds_nothing``: Schemathesis (``st run``, every check but
  ``unsupported_method``, settings in ``schemathesis.toml``) fuzzes ``chalice local`` of a
  whole dev stack (moto, Flux emulator, dev IdP) from ``/v1/openapi.json``.
- The other tests replay the kinds of request a fuzz run found the two disagreeing on,
  checking each body or query against the document's own schema and the API's answer.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from chalicelib.errors import ValidationError
from chalicelib.flux.catalog import (
    MAX_GUIDANCE,
    MAX_N,
    MIN_GUIDANCE,
    OUTPUT_FORMATS,
    REQUIRED_TEXT_PATTERN,
    TEXT_PARAMETERS,
    TEXT_PATTERN,
    aspect_ratios,
    catalog,
    model_names,
    parse_generation_params,
)
from chalicelib.services.image_inputs import INPUT_FIELDS
from chalicelib.services.images import COLLECTION_PATTERN
from chalicelib.services.pagination import ITEM_ID_PATTERN, ULID_PATTERN
from chalicelib.services.uploads import FILENAME_PATTERN
from chalicelib.services.webhooks import URL_PATTERN
from chalicelib.settings import get_settings
from tests import openapi_check
from tests.browser.conftest import dev_stack_env
from tests.openapi_check import NOBODYS
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
PARTI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "parti_prompts.tsv"
# `make test` runs the examples and fuzzing phases over every operation schemathesis.toml
# enables (about 20 s); `make fuzz` adds the coverage phase (every boundary value of every
# operation: about 1,800 cases, several minutes). FUZZ_MAX_TIME_S caps the whole run.
FUZZ_PHASES = os.environ.get("FUZZ_PHASES", "examples,fuzzing")
FUZZ_MAX_TIME_S = int(os.environ.get("FUZZ_MAX_TIME_S", "0"))  # 0: each operation's max-examples, no clock
FUZZ_DEADLINE_S = int(os.environ.get("FUZZ_DEADLINE_S", "240"))  # wall clock for the whole `st run`, seconds
SMALL = {"width": 256, "height": 256}


def parti(n: int) -> list[str]:
    """The first ``n`` PartiPrompts."""
    with PARTI.open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["Prompt"] for _, row in zip(range(n), rows, strict=False)]


# --- the fuzz run -----------------------------------------------------------------------------


@pytest.fixture
def dev_stack(tmp_path) -> Iterator[dict[str, Any]]:
    """A whole dev stack (``python -m devstack``) on free ports; its ``stack.json``."""
    env = dev_stack_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        stack_file = tmp_path / "stack.json"
        wait_for(lambda: stack_file.exists() or proc.poll() is not None, timeout_s=90, what="(the dev stack)")
        assert proc.poll() is None, "the dev stack did not start"
        yield json.loads(stack_file.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout(FUZZ_DEADLINE_S + 120)
def test_schemathesis_finds_nothing(dev_stack, tmp_path):
    token = requests.post(
        dev_stack["auth"]["token_url"], json={"user_id": "fuzz-user", "ttl_seconds": 900}, timeout=10
    ).json()["token"]
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        dev_stack["api_url"] + "/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--exclude-checks",
        "unsupported_method",
        "--seed",
        "20261130",
        "--workers",
        "2",
        "--phases",
        FUZZ_PHASES,
        # a hang, not a slow answer on a loaded machine (no timing assertions in tests)
        "--max-response-time",
        "120",
        "--report-dir",
        str(tmp_path / "report"),
        "--output-truncate",
        "false",
    ]
    if FUZZ_MAX_TIME_S:
        command += ["--max-time", str(FUZZ_MAX_TIME_S)]
    run = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=FUZZ_DEADLINE_S,
        env=os.environ | {"NO_COLOR": "1"},
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert re.search(r"\b(\d+) generated, \1 passed", run.stdout), run.stdout[-3000:]
    # every operation the config enables was tested; none ran out of time or failed to generate
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested and tested[1] == selected[1], run.stdout[-3000:]
    assert int(selected[2]) - int(selected[1]) == len(UNFUZZED), run.stdout[-3000:]
    assert "Time limit reached" not in run.stdout and "Schema Error" not in run.stdout, run.stdout[-3000:]


#: Operations ``st run`` leaves out (schemathesis.toml), each fuzzed by test_body_fuzz.py.
UNFUZZED = {"POST /v1/jobs", "POST /v1/estimates", "POST /v1/videos"}


def test_schemathesis_config_leaves_out_only_what_chalice_local_answers_itself():
    import tomllib

    config = tomllib.loads((ROOT / "schemathesis.toml").read_text())
    disabled = [op for op in config["operations"] if op.get("enabled") is False]
    assert [set(op["include-name"]) for op in disabled] == [UNFUZZED]
    assert config["checks"]["unsupported_method"] == {"enabled": False}
    assert set(config["phases"]["coverage"]["unexpected-methods"]) == {
        "get",
        "put",
        "post",
        "delete",
        "options",
        "patch",
    }


# --- the document states the rules the code applies -----------------------------------------------


def test_the_document_carries_the_codes_patterns_and_enums():
    schemas = openapi_check.spec()["components"]["schemas"]
    generate = schemas["GenerateRequest"]["properties"]
    assert schemas["CollectionName"]["pattern"] == COLLECTION_PATTERN
    assert schemas["Ulid"]["pattern"] == ULID_PATTERN
    assert generate["prompt"]["pattern"] == REQUIRED_TEXT_PATTERN
    assert generate["negative_prompt"]["pattern"] == TEXT_PATTERN
    assert generate["model"]["enum"] == list(model_names())
    assert generate["aspect_ratio"]["enum"] == list(aspect_ratios())
    assert generate["output_format"]["enum"] == list(OUTPUT_FORMATS)
    assert (generate["guidance"]["minimum"], generate["guidance"]["maximum"]) == (MIN_GUIDANCE, MAX_GUIDANCE)
    assert "guidance_scale" not in generate  # no current model takes it: 400 unsupported-parameter
    assert schemas["JobRequest"]["properties"]["webhook_url"]["pattern"] == URL_PATTERN
    assert schemas["UploadRequest"]["properties"]["filename"]["pattern"] == FILENAME_PATTERN

    def rules(props: dict[str, Any], drop: frozenset[str] = frozenset()) -> dict[str, Any]:
        skip = {"prompt", "description"}
        return {
            k: {a: b for a, b in v.items() if a not in skip}
            for k, v in props.items()
            if k in generate and k not in skip and k not in INPUT_FIELDS and k not in drop
        }

    for job_request in ("JobRequest", "JobFileRequest"):
        # a JSON job's n is also the images per set of `sets` (1-1000; 1-4 otherwise, a rule)
        drop = frozenset({"n"}) if job_request == "JobRequest" else frozenset()
        assert rules(schemas[job_request]["properties"], drop) == rules(generate, drop), job_request
    assert schemas["JobRequest"]["properties"]["n"]["maximum"] == get_settings().jobs_max_items
    assert {"image_id", "reference_image_ids", "mask_id"} <= set(generate)
    items = openapi_check.spec()["paths"]["/v1/jobs/{job_id}/items"]["get"]["parameters"]
    assert next(p for p in items if p["name"] == "cursor")["schema"]["pattern"] == ITEM_ID_PATTERN


#: One value per optional parameter, valid for the models that take it.
PARAMETER_VALUES = {
    "aspect_ratio": "16:9",
    "steps": 1,
    "negative_prompt": "blurry",
    "guidance": 3.5,
    "prompt_upsampling": True,
    "output_format": "png",
}
#: Every ``model`` a request might name: absent, each id and alias, retired names, other spellings.
MODEL_CHOICES = [
    None,
    *(name for spec in catalog().models for name in (spec.id, *spec.aliases)),
    "FLUX-2-DEV",
    "black-forest-labs/FLUX.1-schnell ",
    "stabilityai/stable-diffusion-xl",
]


def _code_accepts(body: dict[str, Any]) -> bool:
    try:
        parse_generation_params(body)
    except ValidationError:
        return False
    return True


def _bodies(model: str | None) -> Iterator[dict[str, Any]]:
    base = {"prompt": "a fox"} if model is None else {"prompt": "a fox", "model": model}
    yield base
    for name, value in PARAMETER_VALUES.items():
        yield {**base, name: value}
    for steps in (0, 1, 4, 12, 13, 28, 50, 51):
        yield {**base, "steps": steps}
    for size in (256, 1440, 1456, 1920, 1936):
        yield {**base, "width": size, "height": 512}
    yield {**base, "guidance_scale": 3.5}


@pytest.mark.parametrize("model", MODEL_CHOICES, ids=repr)
def test_the_document_states_each_models_rules(model):
    # the per-model rules of models.json: parameters taken, steps and size ranges, retired names
    for body in _bodies(model):
        assert openapi_check.body_valid("GenerateRequest", body) == _code_accepts(body), body
        job = {k: v for k, v in body.items() if k != "prompt"} | {"prompts": ["a fox"]}
        assert openapi_check.body_valid("JobRequest", job) == _code_accepts(body), job


def test_every_optional_parameter_is_checked_per_model():
    assert set(PARAMETER_VALUES) | {"width", "height"} == set(TEXT_PARAMETERS)


# --- the API answers as the document says ------------------------------------------------------------


def _param_valid(path: str, name: str, value: str) -> bool:
    params = openapi_check.spec()["paths"][path]["get"]["parameters"]
    schema = next(p for p in params if p["name"] == name)["schema"]
    return openapi_check.validator(schema).is_valid(value)


COLLECTIONS = ["trips", "Trip 2026", "a", "a" * 64, "x.y_z-1", " trips", "trips ", "", "a" * 65, "é", "trips\n", "a/b"]


@pytest.mark.parametrize("value", COLLECTIONS, ids=repr)
def test_collection_names_are_what_the_pattern_says(api, value):
    valid = _param_valid("/v1/images", "collection", value)
    assert valid == bool(re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9 _.\-]{0,62}[A-Za-z0-9_.\-])?", value))
    openapi_check.agrees(api.get(f"/v1/images?collection={quote(value)}", user="coll"), valid, value)
    openapi_check.agrees(api.get(f"/v1/jobs?collection={quote(value)}", user="coll"), valid, value)
    body = {"prompts": parti(1), **SMALL, "collection": value}
    assert openapi_check.body_valid("JobRequest", body) == valid
    openapi_check.agrees(api.post("/v1/jobs", user="coll", json_body=body), valid, value)


def test_cursors_are_positions_in_the_callers_own_list(api):
    ids = [
        api.post("/v1/images", user="pager", json_body={"prompt": p, **SMALL}).json["images"][0]["id"] for p in parti(3)
    ]
    first = api.get("/v1/images?limit=1", user="pager").json
    assert first["next_cursor"] == ids[2] and _param_valid("/v1/images", "cursor", first["next_cursor"])
    rest = api.get(f"/v1/images?cursor={first['next_cursor']}", user="pager").json
    assert [i["id"] for i in rest["images"]] == [ids[1], ids[0]]
    # any cursor of the documented shape is a valid position, even one no entry has
    for cursor in ("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "00000000000000000000000000", "01JD0000000000000000000000"):
        assert _param_valid("/v1/images", "cursor", cursor)
        reply = api.get(f"/v1/images?cursor={cursor}", user="pager")
        assert reply.status == 200, reply.body
        openapi_check.check("/v1/images", "GET", 200, reply.json)
    assert [i["id"] for i in api.get("/v1/images?cursor=7ZZZZZZZZZZZZZZZZZZZZZZZZZ", user="pager").json["images"]] == [
        ids[2],
        ids[1],
        ids[0],
    ]
    for cursor in ("garbage", "", "01jd0000000000000000000000", "00000000000000000000000000%0A", "ã"):
        assert not _param_valid("/v1/images", "cursor", cursor.replace("%0A", "\n"))
        reply = api.get(f"/v1/images?cursor={cursor}", user="pager")
        assert reply.status == 400 and reply.json["error"]["code"] == "invalid-cursor", (cursor, reply.body)


PROMPTS = [
    ("line one\r\nline two\tand a tab", True),
    ("  padded  ", True),
    ("un café à Rio — 🌅", True),
    ("bell\x07", False),
    ("nul\x00", False),
    ("c1 \x85 control", False),
    ("\u3000 \u00a0", False),
    ("", False),
    (" " + "x" * 1999, True),
    (" " + "x" * 2000, False),
]


@pytest.mark.parametrize(("prompt", "allowed"), PROMPTS, ids=repr)
def test_prompts_are_what_the_pattern_and_length_say(api, prompt, allowed):
    body = {"prompt": prompt, **SMALL}
    assert openapi_check.body_valid("GenerateRequest", body) == allowed
    openapi_check.agrees(api.post("/v1/images", user="texts", json_body=body), allowed, prompt)


JOB_BODIES = [
    ({"prompts": ["a", "b"]}, True),
    ({"prompt": "a", "count": 3}, True),
    ({"prompt": "a"}, True),
    ({"prompts": ["a"], "prompt": "b"}, False),
    ({"prompts": ["a"], "count": 2}, False),
    ({"count": 2}, False),
    ({"prompt": "a", "count": 251, "n": 4}, False),
    ({"prompts": ["a"] * 334, "n": 3}, False),
    ({"prompts": ["a"] * 333, "n": 3}, True),
    ({"prompt": "a", "model": "kontext-pro", "image_ids": [NOBODYS]}, True),  # well-formed: 404 naming image_ids[0]
    ({"prompt": "a", "image_ids": [NOBODYS]}, False),  # the default model takes no image input
    ({"prompt": "a", "model": "kontext-pro", "image_ids": [NOBODYS], "count": 2}, False),
    ({"prompt": "a", "model": "kontext-pro", "image_ids": ["nope"]}, False),
    ({"prompt": "a", "model": "kontext-pro", "image_ids": [NOBODYS] * 251, "n": 4}, False),
    ({"prompt": "a", "model": "kontext-pro", "collection_images": "shop"}, True),  # no ready upload: 404
    ({"model": "nano-banana", "n": 5, "sets": [{"prompt": "a", "image_ids": [NOBODYS]}]}, True),
    ({"model": "nano-banana", "sets": [{"prompt": "a", "image_ids": [NOBODYS] * 4}]}, False),  # at most 3
    ({"model": "kontext-pro", "sets": [{"prompt": "a", "image_ids": [NOBODYS]}]}, False),  # takes no references
    ({"model": "nano-banana", "prompt": "a", "sets": [{"prompt": "a", "image_ids": [NOBODYS]}]}, False),
    ({"prompts": ["a"], "n": 5}, False),
    ({"prompts": ["a"], "n": 2.0, "steps": 4.0}, True),
    ({"prompts": ["a"], "aspect_ratio": "square", "width": 256}, False),
    ({"prompts": ["a"], "width": 256}, False),
    ({"prompts": ["a"], "model": "FLUX-2-DEV"}, False),
    ({"prompts": ["a"], "model": "flux-2-dev", "steps": 50}, True),
    ({"prompts": ["a"], "model": "flux-1.1-pro", "steps": 28}, False),
    ({"prompts": ["a"], "model": "flux-schnell-free"}, False),
    ({"prompts": ["a"], "steps": 13}, False),
    ({"prompts": ["a"], "name": None}, False),
    ({"prompts": ["a"], "name": "   "}, True),
    ({"prompts": ["a"], "name": "x" * 201}, False),
    ({"prompts": ["a"], "webhook_url": ""}, False),
]


@pytest.mark.parametrize(("body", "allowed"), JOB_BODIES, ids=lambda v: repr(v)[:60])
def test_job_bodies_are_what_the_one_of_and_rules_say(api, body, allowed):
    body = {**SMALL, **body} if "aspect_ratio" not in body and "width" not in body else body
    assert openapi_check.body_valid("JobRequest", body) == allowed
    # a body of many items goes to POST /v1/estimates: the same parser, without writing the items
    many = max(len(body.get("prompts", [])), len(body.get("image_ids", [])), body.get("count", 0)) > 10
    path = "/v1/estimates" if many else "/v1/jobs"
    openapi_check.agrees(api.post(path, user="jobs-contract", json_body=body), allowed, body)


def test_the_document_caps_a_job_at_1000_images():
    for n in range(1, MAX_N + 1):
        most = 1000 // n
        assert openapi_check.body_valid("JobRequest", {"prompt": "a", "count": most, "n": n})
        assert not openapi_check.body_valid("JobRequest", {"prompt": "a", "count": most + 1, "n": n})
        assert openapi_check.body_valid("JobRequest", {"prompts": ["a"] * most, "n": n})
        assert not openapi_check.body_valid("JobRequest", {"prompts": ["a"] * (most + 1), "n": n})


@pytest.mark.parametrize(
    ("image_ids", "allowed"),
    [([""], False), (["not-an-id"], False), (["01JD0000000000000000000000"], True), ([], False)],
    ids=repr,
)
def test_archive_image_ids_are_ulids(api, image_ids, allowed):
    body = {"image_ids": image_ids}
    assert openapi_check.body_valid("ArchiveRequest", body) == allowed
    reply = api.post("/v1/archives", user="zipper", json_body=body)
    openapi_check.agrees(reply, allowed, body)
    if allowed:
        assert reply.status == 404  # well formed, but not one of the caller's images


@pytest.mark.parametrize(
    "query",
    ["limit=2&limit=3", "limit=2&limit=2", "cursor=7ZZZZZZZZZZZZZZZZZZZZZZZZZ&cursor=7ZZZZZZZZZZZZZZZZZZZZZZZZZ"],
)
def test_a_query_parameter_given_twice_is_a_400(api, query):
    for path in ("/v1/images", "/v1/jobs"):
        reply = api.get(f"{path}?{query}", user="twice")
        assert reply.status == 400 and reply.json["error"]["field"] == query.split("=", 1)[0], reply.body


@pytest.mark.parametrize(
    ("limit", "allowed"),
    [
        ("1", True),
        ("100", True),
        ("0", False),
        ("", False),
        (" 5", False),
        ("5_0", False),
        ("+5", False),
        ("2.5", False),
    ],
)
def test_limit_is_an_integer_in_range(api, limit, allowed):
    openapi_check.agrees(api.get(f"/v1/images?limit={quote(limit)}", user="limits"), allowed, limit)


def test_a_subnormal_guidance_is_stored(api):
    # 2.2e-309 is a number in 0-20; DynamoDB numbers stop at 1e-130, so it is kept as 0.0
    body = {"prompt": parti(1)[0], "model": "flux-2-dev", "guidance": 2.225073858507203e-309, **SMALL}
    assert openapi_check.body_valid("GenerateRequest", body)
    reply = api.post("/v1/images", user="tiny", json_body=body)
    assert reply.status == 201, reply.body
    assert reply.json["images"][0]["guidance"] == 0.0


def test_unpaired_surrogates_and_nulls_are_refused(api):
    reply = api.post(
        "/v1/images", user="sur", body='{"prompt": "a \\ud800 fox"}', headers={"content-type": "application/json"}
    )
    assert reply.status == 400 and reply.json["error"]["code"] == "invalid-json"
    reply = api.post("/v1/images", user="sur", json_body={"prompt": "a fox", "seed": None})
    assert reply.status == 400 and reply.json["error"]["field"] == "seed"


def test_a_body_nested_past_the_parsers_depth_is_a_400_not_a_500(api):
    # json.loads raises RecursionError, not ValueError, past about a thousand levels
    for depth in (2_000, 30_000):  # 4 KB and 60 KB, both under the 64 KiB body limit
        raw = '{"prompt": "a fox", "extra": ' + "[" * depth + "]" * depth + "}"
        reply = api.post("/v1/images", user="deep", body=raw, headers={"content-type": "application/json"})
        assert reply.status == 400, reply.body
        assert reply.json["error"]["code"] == "invalid-json" and "deeply" in reply.json["error"]["message"]
    # just inside the parser's depth: parsed, then refused as a field the request does not take
    nest = "[" * 990 + "]" * 990
    for body in ('{"prompt": "a fox", "extra": ' + nest + "}", '{"prompt": ' + nest + "}"):
        reply = api.post("/v1/images", user="deep", body=body, headers={"content-type": "application/json"})
        assert reply.status == 400, reply.body
