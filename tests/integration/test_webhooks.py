"""Job-finished webhooks: Standard Webhooks signatures, retries, SSRF refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from chalicelib.db import JobModel
from chalicelib.jobs import recovery
from chalicelib.services import webhooks
from tests.fixtures.worker import check_job, wait_for

SMALL = {"width": 256, "height": 256}


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records deliveries and answers ``statuses`` in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/promptcanvas"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _app(self, environ, start_response):
        request = Request(environ)
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, request.get_data()))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return Response("ok", status=status)(environ, start_response)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver([500, 204]) as r:
        yield r


def independent_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks v1 signature, computed here from the spec, not by our module."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_standard_webhooks_reference_vector():
    # the specification's published test vector
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, ts, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    signature = webhooks.sign(secret, msg_id, ts, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}
    assert webhooks.verify(secret, headers, body, now=ts + 10)
    assert not webhooks.verify(secret, headers, body + b" ", now=ts + 10)
    assert not webhooks.verify(secret, headers, body, now=ts + 301)  # replay window is 5 minutes


def test_job_webhook_is_signed_retried_and_verifies(api, worker, flux, receiver):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1")
    first = api.get("/v1/me/webhook-secret", user="hooked")
    assert first.status == 200 and first.header("Cache-Control") == "no-store"
    secret = first.json["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    assert api.get("/v1/me/webhook-secret", user="hooked").json["secret"] == secret  # stable
    assert api.get("/v1/me/webhook-secret", user="other").json["secret"] != secret  # per user
    reply = api.post(
        "/v1/jobs", user="hooked", json_body={"prompts": ["a kite", "a comet"], **SMALL, "webhook_url": receiver.url}
    )
    assert reply.status == 202, reply.body
    job_id = reply.json["job_id"]
    worker.start()
    wait_for(lambda: receiver.received, what="(first delivery)")
    job = wait_for(
        lambda: (j := api.get(f"/v1/jobs/{job_id}", user="hooked").json)["webhook"]["last_error"] and j,
        what="(the failed attempt to be recorded)",
    )
    assert job["webhook"]["state"] == "pending" and job["webhook"]["attempts"] == 1
    assert job["webhook"]["last_error"] == "HTTP 500" and job["webhook"]["next_attempt_at"]
    # the backoff has passed (as if): the stuck-work sweep enqueues the retry, the webhook worker sends it
    JobModel(user_id="hooked", job_id=job_id).update(actions=[JobModel.webhook_next_at.set(time.time() - 1)])
    report = recovery.sweep().as_dict()
    assert report["counts"].get("webhooks_enqueued") == 1, report
    job = wait_for(
        lambda: (j := api.get(f"/v1/jobs/{job_id}", user="hooked").json)["webhook"]["state"] == "delivered" and j,
        what="(the retry to be delivered)",
    )
    assert job["webhook"]["attempts"] == 2
    assert len(receiver.received) == 2
    ids = {h["webhook-id"] for h, _ in receiver.received}
    assert len(ids) == 1  # one message, retried under its id
    for headers, body in receiver.received:
        assert headers["content-type"] == "application/json"
        expected = independent_signature(secret, headers["webhook-id"], headers["webhook-timestamp"], body)
        assert headers["webhook-signature"] == expected
        assert webhooks.verify(secret, headers, body)
        assert not webhooks.verify(secret, headers, body.replace(b"completed", b"failed"))
        assert secret not in body.decode() and secret not in json.dumps(headers)
    payload = json.loads(receiver.received[-1][1])
    assert payload["type"] == "job.completed"
    assert payload["data"]["job_id"] == job_id and payload["data"]["counts"]["succeeded"] == 2
    assert recovery.sweep().as_dict()["counts"].get("webhooks_due") is None  # nothing due any more
    check_job("hooked", job_id)


REFUSED = [
    "https://10.0.0.8/hook",
    "https://192.168.1.20/hook",
    "https://172.16.5.4:8443/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/latest",
    "https://[::ffff:10.0.0.1]/hook",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
    "https://127.0.0.1/hook",  # loopback is for the dev stack only
    "http://127.0.0.1:9/hook",
    "http://93.184.216.34/hook",  # http is refused even to a public address
    "https://user:pw@93.184.216.34/hook",
    "ftp://93.184.216.34/hook",
    "https://evil.test/hook",  # resolves to a private address (below)
    "https://no-such-host.invalid/hook",
    "https://93.184.216.34/hook/€",  # not a URI: the request line is ASCII
    "https://例え.jp/hook",  # an IRI host: send its punycode (xn--r8jz45g.jp)
]


def test_private_link_local_and_metadata_addresses_are_refused(api, worker, monkeypatch):
    real = socket.getaddrinfo

    def fake_dns(host, *args, **kwargs):
        if host == "evil.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", 443))]
        if host == "public.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]
        if host == "no-such-host.invalid":
            raise socket.gaierror("Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    malformed = {  # the document's pattern
        "https://user:pw@93.184.216.34/hook",
        "ftp://93.184.216.34/hook",
        "https://93.184.216.34/hook/€",
        "https://例え.jp/hook",
    }
    for url in REFUSED:
        reply = api.post("/v1/jobs", user="ssrf", json_body={"prompts": ["x"], **SMALL, "webhook_url": url})
        # 400: not what the document allows; 422: well formed, but the address is refused
        assert reply.status == (400 if url in malformed else 422), (url, reply.body)
        assert reply.json["error"]["field"] == "webhook_url"
    assert api.get("/v1/jobs", user="ssrf").json["jobs"] == []
    assert webhooks.check_url("https://public.test/hook").addresses == ("93.184.216.34",)


def test_an_address_refused_at_delivery_is_not_sent(api, worker, receiver):
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="1")
    reply = api.post("/v1/jobs", user="rebind", json_body={"prompts": ["x"], **SMALL, "webhook_url": receiver.url})
    assert reply.status == 202
    job_id = reply.json["job_id"]
    worker.configure(ALLOW_LOOPBACK_WEBHOOKS="0")  # e.g. the name now resolves somewhere private
    worker.start()
    job = wait_for(
        lambda: (j := api.get(f"/v1/jobs/{job_id}", user="rebind").json)["webhook"]["state"] == "failed" and j,
        what="(the delivery to be refused)",
    )
    assert "private, loopback" in job["webhook"]["last_error"]
    assert receiver.received == []
