"""docs/scale.md is what ``python -m bench.scale`` computes from the committed bench/results.json."""

from __future__ import annotations

import json

from bench import scale


def test_scale_doc_matches_the_committed_results():
    expected = scale.render(json.loads(scale.RESULTS.read_text()))
    assert scale.DOC.read_text() == expected, "docs/scale.md is stale: run `python -m bench.scale`"
    assert scale.main(["--check"]) == 0


def test_the_model_follows_the_measured_calls():
    results = json.loads(scale.RESULTS.read_text())
    base = scale.model(results)
    more = json.loads(json.dumps(results))
    more["api_overhead"]["aws_calls_by_kind"]["dynamodb.UpdateItem"] += 2  # two more writes per image
    heavier = scale.model(more)
    assert heavier["wru"] == base["wru"] + 2
    added = heavier["per_1000"]["DynamoDB"] - base["per_1000"]["DynamoDB"]
    assert abs(added - 2 * 1000 * scale.PRICES["dynamodb_wru"]) < 1e-12
    assert scale.capacity(base)["keys"][60] >= scale.capacity(base)["keys"][600]
