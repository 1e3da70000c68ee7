"""The stuck-work sweep: expired leases, exhausted attempts, the DLQ, drifted counters,
dry-run mode, and two sweeps at once; the recount message of a counter move in doubt."""

from __future__ import annotations

import json
import threading
import time

import boto3

from chalicelib.db import JobItemModel, watching_retries
from chalicelib.jobs import recovery
from chalicelib.jobs import state as job_state
from chalicelib.jobs import worker as w
from chalicelib.queue import queue_url
from chalicelib.settings import get_settings
from tests.fixtures.worker import check_job, wait_for

SMALL = {"width": 256, "height": 256}


def purge(queue: str | None = None) -> None:
    """Drop every message of a queue (messages lost, as after an outage)."""
    sqs = boto3.client("sqs")
    url = queue_url(queue)
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


def test_sweep_requeues_expired_leases_fails_exhausted_ones_and_drains_the_dlq(api, worker, flux):
    worker.configure(ITEM_LEASE_SECONDS=1, MAX_ITEM_ATTEMPTS=2)
    reply = api.post("/v1/jobs", user="sweep", json_body={"prompts": ["one", "two", "three"], **SMALL})
    job_id = reply.json["job_id"]
    purge()  # every message is lost
    item0, item1, item2 = (JobItemModel.get(job_id, f"{n:04d}") for n in range(3))
    # item 0: a worker took it and died
    lease0 = job_state.lease_item(item0)
    # item 1: two workers took it in turn and both died (attempts exhausted)
    lease1 = job_state.lease_item(item1)
    wait_for(lambda: time.time() > lease1.item.lease_until, what="(first lease to expire)")
    lease1 = job_state.lease_item(JobItemModel.get(job_id, "0001"))
    assert (
        isinstance(lease0, job_state.ItemLease)
        and isinstance(lease1, job_state.ItemLease)
        and int(lease1.item.attempts) == 2
    )
    # item 2: its message went to the DLQ after too many receives
    sqs = boto3.client("sqs")
    dlq = queue_url(get_settings().jobs_dlq_name)
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(job_state.item_message(item2)))
    wait_for(lambda: time.time() > max(lease0.item.lease_until, lease1.item.lease_until), what="(leases to expire)")

    dry = recovery.sweep(dry_run=True).as_dict()
    assert dry["dry_run"] is True
    assert dry["counts"]["leases_requeued"] == 1 and dry["counts"]["items_lease_exhausted"] == 1
    assert dry["counts"]["items_dead_lettered"] == 1
    assert [i.status for i in JobItemModel.query(job_id, consistent_read=True)] == ["running", "running", "queued"]
    assert worker.queue_depth(get_settings().jobs_dlq_name) == 1  # dry run leaves the DLQ alone

    reports: list[dict] = []
    runs = [threading.Thread(target=lambda: reports.append(recovery.sweep().as_dict())) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert len(reports) == 2  # two sweeps at once: every change happened exactly once
    items = list(JobItemModel.query(job_id, consistent_read=True))
    assert [i.status for i in items] == ["queued", "failed", "failed"]
    assert (items[1].error_code, items[2].error_code) == ("lease-expired", "dead-lettered")
    assert worker.queue_depth(get_settings().jobs_dlq_name) == 0
    assert worker.queue_depth() >= 1  # item 0's message was sent again
    check_job("sweep", job_id)

    worker.start()
    job = worker.wait_finished("sweep", job_id)
    assert job.status == "completed_with_errors"
    state = check_job("sweep", job_id)
    assert [i.status for i in state["items"]] == ["succeeded", "failed", "failed"]
    assert api.get("/v1/me/usage", user="sweep").json["used"] == 1  # the two failed ones refunded
    body = api.get(f"/v1/jobs/{job_id}", user="sweep").json
    assert body["errors_by_reason"] == {"dead-lettered": 1, "lease-expired": 1}


def end_items_without_counting(job_id: str) -> None:
    """Fail item 0 (leased) and item 1 (queued) of a 2-item job without their counter moves."""
    lease = job_state.lease_item(JobItemModel.get(job_id, "0000"))
    lease.item.update(
        actions=[
            JobItemModel.status.set("failed"),
            JobItemModel.error_code.set("upstream-rejected"),
            JobItemModel.lease_token.remove(),
            JobItemModel.lease_until.remove(),
        ]
    )
    job_state.fail_queued_item(JobItemModel.get(job_id, "0001"), "cancelled", "the job was cancelled")


def test_sweep_reconciles_counters_after_a_crash_between_writes_and_finishes_the_job(api, worker):
    """Also: a deferral near the receive limit re-sends the message."""
    worker.configure(ITEM_LEASE_SECONDS=4)  # a quiet period longer than a slow machine takes to get here
    reply = api.post("/v1/jobs", user="drift", json_body={"prompts": ["a", "b"], **SMALL})
    job_id = reply.json["job_id"]
    # a worker failed item 0 and died before its counter write; the cancel of item 1 likewise
    end_items_without_counting(job_id)
    job = worker.job("drift", job_id)
    assert job_state.counts(job) == {"queued": 1, "running": 1, "succeeded": 0, "failed": 0}  # drifted
    assert recovery.sweep().as_dict()["counts"].get("counters_reconciled") is None  # too fresh to touch
    wait_for(lambda: time.time() - float(job.counters_at) > job_state.counters_quiet_s(), what="(quiet period)")
    report = recovery.sweep().as_dict()
    assert report["counts"]["counters_reconciled"] == 1 and report["counts"]["jobs_finished"] == 1
    job = worker.job("drift", job_id)
    assert job.status == "failed" and job.finished_at is not None
    check_job("drift", job_id)
    # and: a deferral near the queue's receive limit sends a fresh copy instead of risking the DLQ
    item = JobItemModel.get(job_id, "0000")
    before = worker.queue_depth()
    limit = get_settings().jobs_max_receive_count
    record = {"receiptHandle": "unused", "attributes": {"ApproximateReceiveCount": str(limit - 1)}}
    assert w.defer({**record, "body": json.dumps(job_state.item_message(item))}, 3)  # True: the old copy may go
    assert worker.queue_depth() == before + 1  # a fresh, delayed copy took its place


def test_query_items_reads_only_the_attributes_asked_for(api, worker):
    reply = api.post("/v1/jobs", user="projection", json_body={"prompts": ["a red fox", "a blue owl"], **SMALL})
    job_id = reply.json["job_id"]
    full = job_state.query_items(job_id)
    slim = job_state.query_items(job_id, attributes=(JobItemModel.status, JobItemModel.error_code))
    assert [i.status for i in slim] == [i.status for i in full] == ["queued", "queued"]
    assert [i.prompt for i in full] == ["a red fox", "a blue owl"]
    assert [i.prompt for i in slim] == [None, None]  # not read
    filtered = job_state.query_items(job_id, "queued", attributes=(JobItemModel.error_code,))
    assert len(filtered) == 2  # status is read for the filter even when not asked for


def test_a_recount_message_sets_drifted_counters_from_the_items_and_finishes_the_job(api, worker):
    worker.configure(ITEM_LEASE_SECONDS=4)  # counters quiet for 8 s before a recount
    reply = api.post("/v1/jobs", user="recount", json_body={"prompts": ["a", "b"], **SMALL})
    job_id = reply.json["job_id"]
    # both items end, but their counter moves never land (as when the SDK's attempts all time out)
    end_items_without_counting(job_id)
    assert job_state.counts(worker.job("recount", job_id))["queued"] == 1  # drifted
    job_state.schedule_recount("recount", job_id)
    worker.start()
    wait_for(lambda: worker.job("recount", job_id).finished_at is not None, timeout_s=60, what="the recount")
    job = worker.job("recount", job_id)
    assert job_state.counts(job) == {"queued": 0, "running": 0, "succeeded": 0, "failed": 2}
    assert job.status == "failed"
    check_job("recount", job_id)


def test_a_retried_dynamodb_call_is_reported_to_the_retry_watch(aws):
    events = JobItemModel._get_connection().connection.client.meta.events
    answer = {"ResponseMetadata": {"RetryAttempts": 2}}
    with watching_retries() as retries:
        events.emit("after-call.dynamodb.UpdateItem", parsed=answer, model=None, context={}, http_response=None)
        events.emit(
            "after-call.dynamodb.GetItem", parsed={"ResponseMetadata": {}}, model=None, context={}, http_response=None
        )
    assert retries == [2]  # the call retried twice; the one without retries adds nothing
    events.emit(
        "after-call.dynamodb.UpdateItem", parsed=answer, model=None, context={}, http_response=None
    )  # nobody watching: no error


def test_a_new_thread_makes_no_botocore_session_once_the_model_has_its_client(aws):
    """A worker's batch runs on new threads every invocation: they reuse the model's client
    (with its retry watch) and make no botocore session of their own."""
    connection = JobItemModel._get_connection().connection
    client = connection.client  # made on this thread, with the retry watch
    seen: list[object] = []

    def on_a_new_thread() -> None:
        again = JobItemModel._get_connection().connection
        seen.extend([again.client, getattr(again._local, "session", None)])

    thread = threading.Thread(target=on_a_new_thread)
    thread.start()
    thread.join(10)
    assert seen == [client, None]
    with watching_retries() as retries:
        client.meta.events.emit(
            "after-call.dynamodb.GetItem",
            parsed={"ResponseMetadata": {"RetryAttempts": 1}},
            model=None,
            context={},
            http_response=None,
        )
    assert retries == [1]


def test_every_model_makes_its_client_from_one_botocore_session(aws):
    """One session for all the models' clients (a session per model cost about 9 ms of CPU
    each), and a restore's reset gives them a fresh one."""
    from chalicelib.db import ALL_MODELS
    from chalicelib.db.base import reset_connections

    reset_connections()
    sessions = {id(getattr(model._get_connection().connection._local, "session", None)) for model in ALL_MODELS}
    sessions.discard(id(None))  # a model that took the shared client made none
    assert len(sessions) == 1
    reset_connections()
    assert id(JobItemModel._get_connection().connection._local.session) not in sessions


def test_every_model_shares_one_client_with_a_pool_for_every_thread(aws):
    """Models with the same connection settings (all of them) share one botocore client (each
    further client cost about 7 ms of CPU on a cold or restored copy), whose pool has a
    connection per thread that may call at once; a restore's reset makes a new one."""
    from chalicelib.aws import http_pool_size
    from chalicelib.db import ALL_MODELS, UsageModel
    from chalicelib.db.base import reset_connections
    from chalicelib.settings import get_settings

    reset_connections()
    clients = {id(model._get_connection().connection.client) for model in ALL_MODELS}
    assert len(clients) == 1
    client = UsageModel._get_connection().connection.client
    assert client.meta.config.max_pool_connections == http_pool_size(get_settings())
    UsageModel("one-client", "2026-12").update_no_return([UsageModel.count.add(1)])  # it works for every model
    assert JobItemModel.count("no-such-job") == 0
    reset_connections()
    assert id(JobItemModel._get_connection().connection.client) not in clients
