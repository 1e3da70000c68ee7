"""The cost model at scale: ``docs/scale.md`` computed from ``bench/results.json``.

``python -m bench.scale`` writes the page (``make bench`` runs it after measuring);
``python -m bench.scale --check`` exits 1 when the page is not what the committed figures give.

Measured inputs (``results.json``): the AWS calls of one ``POST /v1/images`` of one 512 x 512
image, of each kind (``api_overhead.aws_calls_by_kind``, from the route's ``Server-Timing``),
the bytes stored (original and thumbnail), the API's own overhead (p50), the batch run's ratio
to the keys' rate-limit bound. Assumptions (named in the page): list prices below, the
upstream's generation time, the peak-to-average ratio, the function memory sizes of
``.chalice/config.json``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "scale.md"

PRICES_CHECKED = "2026-11-30"
REGION = "us-east-1 (US East, N. Virginia)"
#: USD list prices (on-demand, no free tier, no volume tiers beyond the first).
PRICES = {
    "dynamodb_wru": 0.625 / 1e6,  # per write request unit, on-demand (since 2024-11-01)
    "dynamodb_rru": 0.125 / 1e6,  # per read request unit, on-demand
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,  # GET, HEAD and the rest
    "s3_gb_month": 0.023,  # S3 Standard, first 50 TB
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KiB request
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_s": 0.0000166667,  # x86_64
    "apigw_request": 3.50 / 1e6,  # REST API, first 333 million a month
}
PRICE_SOURCES = (
    "aws.amazon.com/dynamodb/pricing/on-demand, /s3/pricing, /sqs/pricing, /lambda/pricing, "
    "/api-gateway/pricing (list prices as published; re-check before budgeting)"
)
#: Request units per call of each DynamoDB kind, for items up to 1 KB written / 4 KB read.
#: A transaction costs 2 units per item; the image write holds two items (image + collection counter).
DYNAMODB_UNITS = {
    "UpdateItem": ("wru", 1),
    "PutItem": ("wru", 1),
    "DeleteItem": ("wru", 1),
    "TransactWriteItems": ("wru", 4),
    "BatchWriteItem": ("wru", 1),
    "BatchGetItem": ("rru", 4),  # the key pool's health snapshot: one item per key (4 keys here)
    "GetItem": ("rru", 1),  # strongly consistent: 1 unit per 4 KB
    "Query": ("rru", 1),
    "Scan": ("rru", 1),
}
S3_PUT_KINDS = {"PutObject", "CopyObject", "ListObjectsV2", "CreateMultipartUpload", "UploadPart"}
S3_FREE_KINDS = {"DeleteObject", "DeleteObjects"}

IMAGES_PER_DAY = 1_000_000
UPSTREAM_S = 2.0  # assumed seconds Together takes for one image (the local emulator answers in ms)
PEAK_TO_AVERAGE = 3.0  # assumed busiest minute over the day's average
API_MEMORY_GB = 1.0  # api_handler, .chalice/config.json
WORKER_MEMORY_GB = 1.0  # process_jobs_queue
WORKER_THREADS = 10  # WORKER_THREADS default: records processed at once per invocation
WORKER_MAX_CONCURRENCY = 4  # WORKER_MAX_CONCURRENCY default
ACCOUNT_CONCURRENCY = 1000  # Lambda's default concurrent executions per account and region
PARTITION_WRU_S = 1000  # DynamoDB per-partition write throughput
KEY_RATES = (60, 300, 600)
KEY_COUNT = 4  # keys in the local stack and the bench  # per-key images per minute to tabulate
MONTH_ITEM_WRITES = 2  # usage.admit and the cost update: the writes on one user's month item per request
SQS_PER_IMAGE_BATCH = 0.3  # SendMessageBatch of 10, the poller's ReceiveMessage and DeleteMessageBatch per 10


def _table(head: tuple[str, str], rows: list[tuple[str, str]]) -> list[str]:
    """A two-column Markdown table, the second column right-aligned."""
    return [f"| {head[0]} | {head[1]} |", "|---|---:|", *(f"| {a} | {b} |" for a, b in rows)]


def _money(usd: float) -> str:
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def model(results: dict[str, Any]) -> dict[str, Any]:
    """Per-image figures and the costs per 1,000 images (USD) from the measured ``results``.

    Raises:
        KeyError: ``results`` lacks the overhead figures (run ``make bench``).
    """
    from chalicelib.flux.catalog import default_model, image_cost

    ov = results["api_overhead"]
    kinds: dict[str, float] = ov["aws_calls_by_kind"]
    wru = rru = s3_put = s3_get = 0.0
    other: dict[str, float] = {}
    for name, per_image in kinds.items():
        service, _, op = name.partition(".")
        if service == "dynamodb" and op in DYNAMODB_UNITS:
            unit, n = DYNAMODB_UNITS[op]
            if unit == "wru":
                wru += per_image * n
            else:
                rru += per_image * n
        elif service == "s3" and op in S3_PUT_KINDS:
            s3_put += per_image
        elif service == "s3" and op not in S3_FREE_KINDS:
            s3_get += per_image
        else:
            other[name] = per_image
    stored = int(ov["original_bytes"]) + int(ov.get("thumbnail_bytes") or 0)
    duration_s = ov["overhead_p50_ms"] / 1000 + UPSTREAM_S
    gb_s_sync = API_MEMORY_GB * duration_s
    gb_s_batch = WORKER_MEMORY_GB * duration_s / WORKER_THREADS
    p = PRICES
    per_1000 = {
        "DynamoDB": 1000 * (wru * p["dynamodb_wru"] + rru * p["dynamodb_rru"]),
        "S3 requests": 1000 * (s3_put * p["s3_put"] + s3_get * p["s3_get"]),
        "S3 storage, per month kept": 1000 * stored / 1e9 * p["s3_gb_month"],
        "SQS (batch jobs)": 1000 * SQS_PER_IMAGE_BATCH * p["sqs_request"],
        "Lambda, POST /v1/images": 1000 * (p["lambda_request"] + gb_s_sync * p["lambda_gb_s"]),
        "Lambda, batch worker": 1000 * (p["lambda_request"] / WORKER_THREADS + gb_s_batch * p["lambda_gb_s"]),
        "API Gateway, POST /v1/images": 1000 * p["apigw_request"],
    }
    flux_model = default_model().id
    together = {f"{w}x{h}": 1000 * image_cost(flux_model, w, h, None) for w, h in ((512, 512), (1024, 1024))}
    return {
        "kinds": kinds,
        "calls_per_image": ov["aws_calls_per_image"],
        "calls_per_image_mean": ov.get("aws_calls_per_image_mean"),
        "wru": wru,
        "rru": rru,
        "s3_put": s3_put,
        "s3_get": s3_get,
        "other": other,
        "original_bytes": int(ov["original_bytes"]),
        "thumbnail_bytes": int(ov.get("thumbnail_bytes") or 0),
        "stored_bytes": stored,
        "overhead_p50_ms": ov["overhead_p50_ms"],
        "duration_s": duration_s,
        "gb_s_sync": gb_s_sync,
        "gb_s_batch": gb_s_batch,
        "per_1000": per_1000,
        "model": flux_model,
        "together_per_1000": together,
        "bound_ratio": (results.get("batch") or {}).get("bound_ratio"),
    }


def capacity(figures: dict[str, Any]) -> dict[str, Any]:
    """Keys and concurrency for :data:`IMAGES_PER_DAY` at the assumed peak."""
    average_per_s = IMAGES_PER_DAY / 86_400
    peak_per_s = average_per_s * PEAK_TO_AVERAGE
    ratio = figures["bound_ratio"] or 1.0
    keys = {rate: math.ceil(peak_per_s * 60 / (rate * ratio)) for rate in KEY_RATES}
    in_flight = peak_per_s * figures["duration_s"]  # Little's law: arrivals x time in the system
    invocations = math.ceil(in_flight / WORKER_THREADS)
    return {
        "average_per_s": average_per_s,
        "peak_per_s": peak_per_s,
        "ratio": ratio,
        "keys": keys,
        "in_flight": in_flight,
        "invocations": invocations,
        "sync_concurrency": in_flight,
        "account_ceiling_per_day": ACCOUNT_CONCURRENCY / figures["duration_s"] * 86_400 / PEAK_TO_AVERAGE,
        "worker_ceiling_per_day": WORKER_MAX_CONCURRENCY
        * WORKER_THREADS
        / figures["duration_s"]
        * 86_400
        / PEAK_TO_AVERAGE,
        "one_user_ceiling_per_s": PARTITION_WRU_S / MONTH_ITEM_WRITES,
        "per_key_per_day": {rate: rate * ratio * 1440 / PEAK_TO_AVERAGE for rate in KEY_RATES},
    }


def render(results: dict[str, Any]) -> str:
    """The Markdown of ``docs/scale.md`` for ``results``."""
    f = model(results)
    c = capacity(f)
    ceilings = sorted(
        [
            (
                f"Together keys: {KEY_COUNT} at {KEY_RATES[0]}/min (more keys, a higher tier)",
                KEY_COUNT * c["per_key_per_day"][KEY_RATES[0]],
            ),
            (
                f"jobs worker: `WORKER_MAX_CONCURRENCY`={WORKER_MAX_CONCURRENCY} × `WORKER_THREADS`={WORKER_THREADS}",
                c["worker_ceiling_per_day"],
            ),
            (f"Lambda account concurrency, {ACCOUNT_CONCURRENCY} (Service Quotas)", c["account_ceiling_per_day"]),
            (
                "one user's month item in DynamoDB (none: partition throughput)",
                c["one_user_ceiling_per_s"] * 86_400 / PEAK_TO_AVERAGE,
            ),
        ],
        key=lambda row: row[1],
    )
    per_1000 = f["per_1000"]
    aws_total = sum(v for k, v in per_1000.items() if "storage" not in k and "batch" not in k and "SQS" not in k)
    lines = [
        "# Scale: what 1 million images a day costs and needs",
        "",
        "<!-- Generated by `python -m bench.scale` from bench/results.json (`make bench`). Do not edit. -->",
        "",
        f"Measured on the local stack (bench run of {results.get('started_at', '?')}, "
        f"{results.get('machine', {}).get('cpus', '?')} CPUs); prices are list prices for {REGION}, "
        f"checked {PRICES_CHECKED} ({PRICE_SOURCES}). Assumed: Together takes {UPSTREAM_S:g} s per image, "
        f"the busiest minute carries {PEAK_TO_AVERAGE:g}× the day's average, items stay under 1 KB.",
        "",
        "## Per image (`POST /v1/images`, one 512 × 512 image)",
        "",
    ]
    calls = [(f"`{name}`", f"{n:g}") for name, n in sorted(f["kinds"].items())]
    calls.append(("**total** (median; mean)", f"**{f['calls_per_image']:g}**; {f['calls_per_image_mean']}"))
    lines += _table(("AWS call", "per image"), calls)
    lines += [
        "",
        f"- DynamoDB: {f['wru']:g} write request units, {f['rru']:g} read request units "
        "(a transaction counts 2 units per item).",
        f"- S3: {f['s3_put']:g} PUT-class and {f['s3_get']:g} GET-class requests; "
        f"{f['stored_bytes']:,} bytes stored ({f['original_bytes']:,} original + {f['thumbnail_bytes']:,} thumbnail).",
        f"- Lambda: {f['duration_s']:.3f} s at {API_MEMORY_GB:g} GB = {f['gb_s_sync']:.3f} GB-s on the API "
        f"(overhead p50 {f['overhead_p50_ms']} ms + Flux); a batch item shares its invocation with "
        f"{WORKER_THREADS - 1} others: {f['gb_s_batch']:.3f} GB-s.",
        "",
        "## Cost per 1,000 images",
        "",
    ]
    costs = [(name, _money(usd)) for name, usd in per_1000.items()]
    costs.append(("**AWS, synchronous path** (DynamoDB, S3 requests, Lambda, API Gateway)", f"**{_money(aws_total)}**"))
    lines += _table(("", "USD"), costs)
    together = f["together_per_1000"]
    lines += [
        "",
        f"Together at catalog prices (`chalicelib/flux/models.json`, model `{f['model']}`, default steps):",
        "",
        *_table(("size", "USD per 1,000 images"), [(size, _money(usd)) for size, usd in together.items()]),
        "",
        f"AWS adds {aws_total / together['512x512']:.0%} to the upstream's 512 × 512 price and "
        f"{aws_total / together['1024x1024']:.0%} to its 1024 × 1024 price (Lambda waiting on Together is most of it).",
        "",
        "## 1 million images a day",
        "",
        f"Average {c['average_per_s']:.1f} images/s; the busiest minute {c['peak_per_s']:.1f} images/s "
        f"({c['peak_per_s'] * 60:,.0f} a minute).",
        "",
        f"**Keys** (the batch run reached {c['ratio']:g} of the keys' combined rate-limit bound):",
        "",
        *_table(
            ("per-key rate limit (images/min)", "keys needed at the peak"),
            [(str(r), str(n)) for r, n in c["keys"].items()],
        ),
        "",
        f"**Concurrency** (Little's law, {f['duration_s']:.2f} s per image): {c['in_flight']:.0f} images in "
        f"flight at the peak. Through batch jobs that is {c['invocations']} worker invocations of "
        f"`WORKER_THREADS`={WORKER_THREADS}; through `POST /v1/images`, {c['sync_concurrency']:.0f} concurrent "
        "API Lambdas.",
        "",
        "## Where the first bottleneck lies",
        "",
        "Each ceiling in images a day at the assumed peak, lowest first; the first one below 1 million is "
        "where it stops:",
        "",
        *_table(("limit (setting that moves it)", "images a day"), [(name, f"{n:,.0f}") for name, n in ceilings]),
        "",
        f"With the defaults and {KEY_COUNT} keys at {KEY_RATES[0]} images/min, the first bottleneck is "
        f"**{ceilings[0][0]}**. SQS standard queues have no practical throughput limit "
        f"({SQS_PER_IMAGE_BATCH:g} requests per image in batches of 10). A DynamoDB partition takes "
        f"{PARTITION_WRU_S} WRU/s: one user's month item takes {MONTH_ITEM_WRITES} writes per request, so one "
        "user alone tops out there (no setting moves it; a very large tenant needs several user ids); "
        "the key pool's items are read from a per-instance snapshot, not per request.",
        "",
    ]
    return "\n".join(lines)


def write(results_path: Path = RESULTS, doc: Path = DOC) -> Path:
    """Write ``doc`` from ``results_path``; returns ``doc``."""
    doc.write_text(render(json.loads(results_path.read_text())))
    return doc


def main(argv: list[str] | None = None) -> int:
    """``--check``: 1 when ``docs/scale.md`` differs from what ``results.json`` gives; else write it."""
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        expected = render(json.loads(RESULTS.read_text()))
        if not DOC.exists() or DOC.read_text() != expected:
            print("docs/scale.md is stale: run `python -m bench.scale`", file=sys.stderr)
            return 1
        return 0
    print(f"wrote {write().relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
