"""Hostile webhook receivers against the local stack: deadlines, answer caps, the webhooks
queue's own worker, the sweep that only enqueues, the per-user delivery rate, SSRF ranges,
sealed signing secrets and their rotation."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest

from chalicelib.db import JobModel, UsageModel, UserModel
from chalicelib.jobs import recovery
from chalicelib.services import webhook_http, webhooks
from chalicelib.settings import get_settings
from devstack.prompts import parti_prompts
from tests.fixtures.worker import check_job, wait_for
from tests.integration.test_webhooks import SMALL, Receiver, independent_signature

PROMPTS = parti_prompts()[:40]
HUGE_LENGTH = 64 * 1024 * 1024
JOBS_QUEUE = "promptcanvas-jobs"


@dataclass
class Connection:
    """One accepted connection: when it opened and closed (monotonic seconds) and bytes sent."""

    opened: float
    closed: float | None = None
    sent: int = 0


@dataclass
class HostileReceiver:
    """A raw-socket webhook receiver on 127.0.0.1.

    ``drip``: answers ``200`` with a huge ``Content-Length``, then one byte a second.
    ``flood``: answers ``200`` with a huge ``Content-Length`` and writes as fast as it can.
    Either way it stops when the client closes the connection (or at ``stop``).
    """

    mode: str
    connections: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> HostileReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Connection(opened=time.monotonic())
            self.connections.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk

    @staticmethod
    def _peer_closed(conn: socket.socket) -> bool:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        try:
            return conn.recv(4096, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _serve(self, conn: socket.socket, record: Connection) -> None:
        try:
            self._read_request(conn)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {HUGE_LENGTH}\r\n\r\n".encode()
            conn.sendall(head)
            record.sent = len(head)
            conn.settimeout(1)
            chunk = b"x" * 65536
            while not self._stop.is_set() and record.sent < HUGE_LENGTH and not self._peer_closed(conn):
                if self.mode == "drip":
                    conn.sendall(b"x")
                    record.sent += 1
                    self._stop.wait(1.0)
                else:
                    try:
                        record.sent += conn.send(chunk)
                    except TimeoutError:
                        continue
        except OSError:
            pass
        finally:
            record.closed = time.monotonic()
            conn.close()


@pytest.fixture
def drip() -> Iterator[HostileReceiver]:
    with HostileReceiver("drip") as receiver:
        yield receiver


@pytest.fixture
def flood() -> Iterator[HostileReceiver]:
    with HostileReceiver("flood") as receiver:
        yield receiver


def webhook_state(api, user: str, job_id: str) -> dict:
    return api.get(f"/v1/jobs/{job_id}", user=user).json["webhook"]


def test_drip_feeding_receiver_is_abandoned_while_another_users_job_finishes(api, worker, flux, drip):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1", WEBHOOK_TIMEOUT_SECONDS="2")
    hostile_jobs = []
    for prompt in PROMPTS[:5]:
        reply = api.post("/v1/jobs", user="dripper", json_body={"prompts": [prompt], **SMALL, "webhook_url": drip.url})
        assert reply.status == 202, reply.body
        hostile_jobs.append(reply.json["job_id"])
        assert api.post(f"/v1/jobs/{reply.json['job_id']}/cancel", user="dripper").status == 200
    with Receiver([204]) as good:
        reply = api.post(
            "/v1/jobs", user="victim", json_body={"prompts": PROMPTS[5:13], **SMALL, "webhook_url": good.url}
        )
        assert reply.status == 202, reply.body
        victim_job = reply.json["job_id"]
        worker.start()
        # 8 images take about 20 s; a drip-fed receiver would hold the worker for ever. The
        # allowance is wide for a busy 2-core CI machine (60 s ran out once, at 76 s in all).
        worker.wait_finished("victim", victim_job, timeout_s=150)
        check_job("victim", victim_job)
        assert wait_for(lambda: webhook_state(api, "victim", victim_job)["state"] == "delivered", timeout_s=30)
    # every drip-fed delivery was given up at the deadline and recorded as a failed attempt
    for job_id in hostile_jobs:
        state = wait_for(
            lambda job_id=job_id: (s := webhook_state(api, "dripper", job_id))["last_error"] and s,
            timeout_s=60,
            what=f"(the drip-fed delivery of {job_id} to be abandoned)",
        )
        assert state["last_error"] == "request failed (deadline)", state
        assert state["state"] == "pending" and state["attempts"] == 1
    wait_for(lambda: len(drip.connections) >= 5 and all(c.closed for c in drip.connections), timeout_s=30)
    for conn in drip.connections:
        # the client hung up: the receiver never got to drip its gigabyte (a few bytes at most)
        assert conn.closed - conn.opened < 2 + 5, conn
        assert conn.sent < 200, conn


def test_a_huge_answer_is_not_read_past_the_cap(api, worker, flood):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1", WEBHOOK_MAX_RESPONSE_BYTES="4096")
    checked = webhooks.check_url(flood.url)
    answer = webhooks.post_signed(checked, b'{"type":"job.completed"}', {"content-type": "application/json"})
    assert answer.status == 200
    assert answer.bytes_read <= 4096 and answer.truncated
    wait_for(lambda: flood.connections and flood.connections[0].closed, what="(the client to hang up)")
    # the receiver could only fill the socket buffers before the client hung up
    assert flood.connections[0].sent < HUGE_LENGTH


def test_a_receiver_that_never_answers_hits_the_wall_clock_deadline(api, worker):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1")
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never reads or answers
    try:
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(webhook_http.DeliveryError) as err:
            webhook_http.post(
                f"http://127.0.0.1:{port}/hook",
                scheme="http",
                host="127.0.0.1",
                port=port,
                address="127.0.0.1",
                body=b"{}",
                headers={},
                deadline_s=1.0,
                max_bytes=4096,
            )
        assert err.value.reason == "deadline"
        assert time.monotonic() - started < 1.0 + 3
    finally:
        silent.close()


def test_the_sweep_only_enqueues_deliveries(api, worker, flux):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1")
    webhooks_queue = get_settings().webhooks_queue_name
    with Receiver([500, 204]) as receiver:
        reply = api.post(
            "/v1/jobs", user="swept", json_body={"prompts": PROMPTS[:1], **SMALL, "webhook_url": receiver.url}
        )
        job_id = reply.json["job_id"]
        worker.start()
        wait_for(lambda: webhook_state(api, "swept", job_id)["last_error"], what="(the first attempt to fail)")
        worker.stop()
        assert len(receiver.received) == 1
        # the backoff has passed (as if): the sweep finds the attempt due
        JobModel(user_id="swept", job_id=job_id).update(actions=[JobModel.webhook_next_at.set(time.time() - 1)])
        before = worker.queue_depth(webhooks_queue)
        report = recovery.sweep().as_dict()
        assert report["counts"].get("webhooks_enqueued") == 1, report
        assert not any(
            k.startswith("webhooks_") and k not in ("webhooks_due", "webhooks_enqueued") for k in report["counts"]
        )
        assert len(receiver.received) == 1, "the sweep delivered inline"
        assert webhook_state(api, "swept", job_id)["attempts"] == 1
        assert worker.queue_depth(webhooks_queue) == before + 1
        assert worker.queue_depth(JOBS_QUEUE) == 0  # nothing for the image workers
        worker.start(queues={webhooks_queue})
        wait_for(lambda: webhook_state(api, "swept", job_id)["state"] == "delivered", what="(the webhook worker)")
        assert len(receiver.received) == 2


def test_deliveries_over_the_per_user_rate_are_deferred_not_dropped(api, worker, flux):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1", WEBHOOK_USER_RATE_LIMIT="2", WEBHOOK_RATE_WINDOW_SECONDS="5")
    webhooks_queue = get_settings().webhooks_queue_name
    with Receiver([204]) as flooded, Receiver([204]) as calm:
        jobs = []
        for prompt in PROMPTS[20:25]:
            reply = api.post(
                "/v1/jobs", user="flooder", json_body={"prompts": [prompt], **SMALL, "webhook_url": flooded.url}
            )
            jobs.append(reply.json["job_id"])
        calm_job = api.post(
            "/v1/jobs", user="bystander", json_body={"prompts": PROMPTS[25:26], **SMALL, "webhook_url": calm.url}
        ).json["job_id"]
        worker.start(queues={JOBS_QUEUE})
        for job_id in jobs:
            worker.wait_finished("flooder", job_id)
        worker.wait_finished("bystander", calm_job)
        assert worker.queue_depth(webhooks_queue) == 6  # all six deliveries wait on the webhooks queue
        worker.start(queues={webhooks_queue})

        def delayed() -> int:
            from chalicelib.queue import queue_url

            attrs = boto3.client("sqs").get_queue_attributes(
                QueueUrl=queue_url(webhooks_queue), AttributeNames=["ApproximateNumberOfMessagesDelayed"]
            )["Attributes"]
            return int(attrs["ApproximateNumberOfMessagesDelayed"])

        wait_for(delayed, what="(deliveries over the rate to be deferred)")
        assert len(flooded.received) <= 4  # at most two a window, and the burst spans at most two
        wait_for(lambda: webhook_state(api, "bystander", calm_job)["state"] == "delivered", what="(the other user)")
        for job_id in jobs:
            state = wait_for(
                lambda job_id=job_id: (s := webhook_state(api, "flooder", job_id))["state"] == "delivered" and s,
                timeout_s=60,
                what="(every deferred delivery to go out)",
            )
            assert state["attempts"] == 1  # deferral spends no attempt
    assert len(flooded.received) == 5
    windows = [u for u in UsageModel.query("flooder", consistent_read=True) if u.period.startswith("webhook#")]
    assert sum(int(u.count) for u in windows) == 5 and all(int(u.count) <= 2 for u in windows)
    assert len(windows) >= 3


NEW_REFUSED = [
    "https://[64:ff9b::a00:1]/hook",  # NAT64 well-known prefix -> 10.0.0.1
    "https://[64:ff9b::5db8:d822]/hook",  # NAT64 of a public address: still refused
    "https://[64:ff9b:1::a00:1]/hook",  # NAT64 local-use prefix
    "https://[2002:a00:1::1]/hook",  # 6to4 of 10.0.0.1
    "https://[2002:5db8:d822::1]/hook",  # 6to4 of a public address
    "https://[::a00:1]/hook",  # IPv4-compatible 10.0.0.1
    "https://[::5db8:d822]/hook",  # IPv4-compatible public address
    "https://nat64.test/hook",  # a name that resolves into the NAT64 prefix
    "https://93.184.216.34:8443/hook",  # production webhooks use port 443 only
    "https://public.test:80/hook",
]


def test_nat64_6to4_ipv4_compatible_and_non_443_urls_are_refused(api, monkeypatch):
    real = socket.getaddrinfo

    def fake_dns(host, *args, **kwargs):
        if host == "nat64.test":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::c0a8:101", 443, 0, 0))]
        if host == "public.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    for url in NEW_REFUSED:
        reply = api.post("/v1/jobs", user="ssrf6", json_body={"prompts": PROMPTS[:1], **SMALL, "webhook_url": url})
        assert reply.status in (400, 422), (url, reply.body)  # malformed: 400; refused host or port: 422
        assert reply.json["error"]["field"] == "webhook_url"
    assert api.get("/v1/jobs", user="ssrf6").json["jobs"] == []
    assert webhooks.check_url("https://93.184.216.34/hook").port == 443
    # the dev stack's switch admits loopback on any port, and nothing else
    monkeypatch.setenv("ALLOW_LOOPBACK_WEBHOOKS", "1")
    get_settings.cache_clear()
    assert webhooks.check_url("http://127.0.0.1:8123/hook").port == 8123
    with pytest.raises(webhooks.WebhookAddressError):
        webhooks.check_url("https://93.184.216.34:8443/hook")
    with pytest.raises(webhooks.WebhookAddressError):
        webhooks.check_url("https://[64:ff9b::7f00:1]/hook")  # NAT64 of 127.0.0.1 is not loopback


def raw_user_item(user_id: str) -> dict:
    table = UserModel.Meta.table_name
    return boto3.client("dynamodb").get_item(TableName=table, Key={"user_id": {"S": user_id}}, ConsistentRead=True)[
        "Item"
    ]


def test_the_secret_is_sealed_in_dynamodb_and_rotation_changes_the_signing_key(api, worker, flux):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1")
    old = api.get("/v1/me/webhook-secret", user="sealed").json["secret"]
    key_part = old.removeprefix("whsec_")
    item = raw_user_item("sealed")
    text = json.dumps(item)
    assert key_part not in text and "webhook_secret" not in item
    assert item["webhook_secret_sealed"]["S"].startswith("kms1.")
    # the sealed value opens only through KMS, for this user
    assert api.get("/v1/me/webhook-secret", user="sealed").json["secret"] == old

    rotated = api.post("/v1/me/webhook-secret/rotate", user="sealed")
    assert rotated.status == 200 and rotated.header("Cache-Control") == "no-store"
    new = rotated.json["secret"]
    assert new.startswith("whsec_") and new != old and rotated.json["scheme"] == "standard-webhooks-v1"
    assert api.get("/v1/me/webhook-secret", user="sealed").json["secret"] == new
    assert new.removeprefix("whsec_") not in json.dumps(raw_user_item("sealed"))
    assert api.post("/v1/me/webhook-secret/rotate").status == 401

    with Receiver([204]) as receiver:
        reply = api.post(
            "/v1/jobs", user="sealed", json_body={"prompts": PROMPTS[30:31], **SMALL, "webhook_url": receiver.url}
        )
        worker.start()
        wait_for(lambda: receiver.received, what="(the delivery)")
    headers, body = receiver.received[0]
    assert headers["webhook-signature"] == independent_signature(
        new, headers["webhook-id"], headers["webhook-timestamp"], body
    )
    assert webhooks.verify(new, headers, body) and not webhooks.verify(old, headers, body)
    assert json.loads(body)["data"]["job_id"] == reply.json["job_id"]


def test_a_legacy_plaintext_secret_is_read_once_and_sealed(api):
    legacy = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    boto3.client("dynamodb").put_item(
        TableName=UserModel.Meta.table_name, Item={"user_id": {"S": "legacy"}, "webhook_secret": {"S": legacy}}
    )
    assert api.get("/v1/me/webhook-secret", user="legacy").json["secret"] == legacy
    item = raw_user_item("legacy")
    assert "webhook_secret" not in item and legacy.removeprefix("whsec_") not in json.dumps(item)
    assert api.get("/v1/me/webhook-secret", user="legacy").json["secret"] == legacy


def test_a_webhook_message_on_the_jobs_queue_is_forwarded_not_delivered(api, worker, flux):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1")
    from chalicelib import queue

    webhooks_queue = get_settings().webhooks_queue_name
    queue.send_messages([{"type": "webhook", "user_id": "old", "job_id": "01JOBFROMBEFORE"}])
    worker.start(queues={JOBS_QUEUE})
    wait_for(lambda: worker.queue_depth(webhooks_queue) == 1, what="(the message to move to the webhooks queue)")
