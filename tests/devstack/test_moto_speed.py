"""The moto speed-ups answer as moto itself does (devstack.moto_speed)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import create_backend_app

from devstack.moto_speed import speed_up_moto_server

#: inferred host -> the backend moto's own lookup picks (moto 5.2)
HOSTS = {
    "dynamodb": "dynamodb",
    "s3.us-east-1.amazonaws.com": "s3",
    "promptcanvas-images.s3.us-east-1.amazonaws.com": "s3",
    "sqs.us-east-1.amazonaws.com": "sqs",
    "secretsmanager.us-east-1.amazonaws.com": "secretsmanager",
    "kms.us-east-1.amazonaws.com": "kms",
    None: None,
}


def test_backend_lookup_is_moto_s_and_lists_moto_s_package_once(monkeypatch):
    speed_up_moto_server()
    speed_up_moto_server()  # idempotent
    dispatcher = DomainDispatcherApplication(create_backend_app)
    assert {host: dispatcher.get_backend_for_host(host) for host in HOSTS} == HOSTS
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or real_listdir(path))
    other = DomainDispatcherApplication(create_backend_app)
    assert {host: other.get_backend_for_host(host) for host in HOSTS} == HOSTS
    assert listed == []


def test_a_message_is_kept_for_its_queue_s_retention_period_and_no_longer():
    from moto.sqs.models import SQSBackend

    speed_up_moto_server()
    queue = SimpleNamespace(message_retention_period=60)
    backend = SimpleNamespace(get_queue=lambda name: queue)
    check = SQSBackend.is_message_valid_based_on_retention_period
    now_ms = time.time() * 1000
    assert check(backend, "q", SimpleNamespace(sent_timestamp=now_ms - 55_000)) is True
    assert check(backend, "q", SimpleNamespace(sent_timestamp=now_ms - 61_000)) is False
    queue.message_retention_period = "120"  # as set through SetQueueAttributes
    assert check(backend, "q", SimpleNamespace(sent_timestamp=now_ms - 61_000)) is True


def test_a_full_collection_freezes_its_survivors_so_the_next_one_skips_them():
    import subprocess
    import sys

    probe = (
        "import gc\n"
        "gc.disable()  # only the collections below\n"
        "from devstack.moto_speed import freeze_after_full_collections\n"
        "freeze_after_full_collections(); freeze_after_full_collections()\n"
        "kept = [[i] for i in range(50_000)]\n"
        "before = gc.get_freeze_count()\n"
        "gc.collect(1)\n"
        "assert gc.get_freeze_count() == before  # only full collections freeze\n"
        "gc.collect(2)\n"
        "frozen = gc.get_freeze_count() - before\n"
        "assert frozen >= 50_000, frozen\n"
        "cycle = []; cycle.append(cycle); del cycle\n"
        "assert gc.collect(2) >= 1  # garbage made after the freeze is still collected\n"
        "print(len(gc.callbacks))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"  # one callback, however often it is asked for


def test_a_read_never_sees_half_an_update(aws):
    """moto changes an item one action at a time; the fidelity lock makes a read see all of an
    UpdateItem or none of it, as DynamoDB does. Threads switch every microsecond here, so a read
    served in the middle of an update would be caught."""
    import sys
    import threading

    from chalicelib.db import UploadModel

    key = ("torn", "01TORNREADTORNREADTORNREAD")
    item = UploadModel(*key, status="pending", filename="a.png", created_at=1.0)
    item.save()
    fields = [UploadModel.error_code, UploadModel.error_message, UploadModel.filename, UploadModel.content_type]
    stop = threading.Event()

    def write() -> None:
        for i in range(150):
            item.update(actions=[field.set(f"v{i}") for field in fields])
        stop.set()

    torn = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        writer = threading.Thread(target=write)
        writer.start()
        while not stop.is_set():
            seen = UploadModel.get(*key, consistent_read=True)
            values = {seen.error_code, seen.error_message, seen.filename, seen.content_type}
            if len(values) > 1 and seen.error_code is not None:
                torn.append(values)
        writer.join()
    finally:
        sys.setswitchinterval(interval)
    assert torn == []


def test_a_remembered_condition_parse_answers_as_a_fresh_one():
    import pytest
    from moto.dynamodb.comparisons import ConditionExpressionParser
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    speed_up_moto_server()
    expression = "#w = :w AND (attribute_not_exists(#c) OR #c <= :q)"
    names = {"#w": "window", "#c": "count"}

    def parse(quota: str) -> tuple[object, list[str], list[str]]:
        parser = ConditionExpressionParser(expression, dict(names), {":w": {"S": "12:00"}, ":q": {"N": quota}})
        op = parser.parse()
        return op, parser.expr_attr_names_found, parser.expr_attr_values_found

    item = Item(DynamoType({"S": "user"}), None, {"window": {"S": "12:00"}, "count": {"N": "4"}})
    first, names_found, values_found = parse("5")
    again, names_again, values_again = parse("5")
    other, _, _ = parse("3")
    assert again is first  # remembered
    assert (names_again, values_again) == (names_found, values_found)
    assert sorted(names_found) == ["#c", "#c", "#w"] and sorted(values_found) == [":q", ":w"]
    assert first.expr(item) is True and other.expr(item) is False  # the values are part of the key
    for _ in range(2):  # a bad expression is refused every time, never remembered
        with pytest.raises(Exception):  # noqa: B017 - moto raises its own parse errors
            ConditionExpressionParser("#c <", {"#c": "count"}, {}).parse()


def test_the_action_names_of_a_response_class_are_listed_once():
    import inspect

    import moto.core.responses as responses
    from moto.dynamodb.responses import DynamoHandler

    speed_up_moto_server()
    names = responses.method_names_from_class(DynamoHandler)
    assert names == [name for name, _ in inspect.getmembers(DynamoHandler, inspect.isfunction)]
    assert "update_item" in names
    assert responses.method_names_from_class(DynamoHandler) is names


def test_a_remembered_update_parse_is_shared_and_a_bad_one_refused_every_time():
    import pytest
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    speed_up_moto_server()
    tree = UpdateExpressionParser.make("ADD #c :one SET #w = :w")
    assert UpdateExpressionParser.make("ADD #c :one SET #w = :w") is tree
    assert UpdateExpressionParser.make("ADD #c :two") is not tree
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - moto raises its own parse errors
            UpdateExpressionParser.make("ADD SET")


def test_updates_sharing_one_expression_apply_their_own_values(aws):
    """moto validates a copy of the remembered tree: each call's values are its own."""
    from chalicelib.db import UsageModel

    for user, n in (("shared-tree-a", 2), ("shared-tree-b", 5), ("shared-tree-a", 3)):
        UsageModel(user, "2026-12").update_no_return([UsageModel.count.add(n)])
    counts = {
        user: int(UsageModel.get(user, "2026-12", consistent_read=True).count)
        for user in ("shared-tree-a", "shared-tree-b")
    }
    assert counts == {"shared-tree-a": 5, "shared-tree-b": 5}
