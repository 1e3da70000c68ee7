"""`make dev`'s stack as a user runs it: one process, every part answers, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.browser.conftest import dev_stack_env
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]


def port_open(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture
def dev_process(tmp_path):
    env = dev_stack_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc, tmp_path
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_make_dev_stack_serves_every_part_and_stops_cleanly(dev_process):
    proc, state_dir = dev_process
    stack_file = state_dir / "stack.json"
    wait_for(lambda: stack_file.exists() or proc.poll() is not None, timeout_s=60)
    assert proc.poll() is None, proc.stdout.read()
    info = json.loads(stack_file.read_text())
    assert set(info) >= {"api_url", "web_url", "aws_endpoint_url", "flux_base_url", "auth"}
    assert set(info["auth"]) == {"issuer", "jwks_url", "token_url"}

    # every part answers
    health = requests.get(info["api_url"] + "/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json() == {"status": "ok"}
    assert requests.get(info["web_url"] + "/config.js", timeout=5).text.count(info["api_url"]) == 1
    assert requests.get(info["auth"]["jwks_url"], timeout=5).json()["keys"]
    assert requests.get(info["aws_endpoint_url"] + "/moto-api/data.json", timeout=5).status_code == 200
    assert info["dynamodb_endpoint_url"] != info["aws_endpoint_url"]

    # a signed-in user generates an image through the real HTTP API (chalice local)
    token = requests.post(info["auth"]["token_url"], json={"user_id": "devstack-user"}, timeout=5).json()["token"]
    reply = requests.post(
        info["api_url"] + "/v1/images",
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Origin": info["web_url"]},
        json={"prompt": "a red bicycle leaning on a brick wall", "aspect_ratio": "1:1"},
    )
    assert reply.status_code == 201, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == info["web_url"]
    image = reply.json()["images"][0]
    assert requests.get(image["url"], timeout=5).content[:2] == b"\xff\xd8"

    # the web client's "sign in as an organization admin" (org_dev) is an admin; a self-made org is not
    def admin_keys(org_id: str) -> requests.Response:
        body = {"user_id": "devstack-admin", "org_id": org_id, "org_role": "admin"}
        admin = requests.post(info["auth"]["token_url"], json=body, timeout=5).json()["token"]
        headers = {"Authorization": f"Bearer {admin}", "Origin": info["web_url"]}
        return requests.get(info["api_url"] + "/v1/admin/keys", headers=headers, timeout=10)

    assert admin_keys("org_dev").status_code == 200
    assert admin_keys("org_mine").status_code == 403

    # chalice local answers a cross-site cookie POST with our JSON 403, not its own content-type error
    csrf = requests.post(
        info["api_url"] + "/v1/images",
        headers={
            "Cookie": f"__session={token}",
            "Origin": "https://evil.example",
            "Content-Type": "text/plain; application/json",
        },
        data=json.dumps({"prompt": "a red bicycle leaning on a brick wall"}),
        timeout=10,
    )
    assert csrf.status_code == 403 and csrf.json()["error"]["code"] == "origin-not-allowed", csrf.text
    typed = requests.post(
        info["api_url"] + "/v1/images",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
        data="{}",
        timeout=10,
    )
    assert typed.status_code == 415 and typed.json()["error"]["code"] == "unsupported-media-type", typed.text

    # SIGTERM stops every part and leaves no process behind
    api_port = info["api_url"].rsplit(":", 1)[1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    for url in (
        info["api_url"],
        info["web_url"],
        info["aws_endpoint_url"],
        info["dynamodb_endpoint_url"],
        info["flux_base_url"],
        info["auth"]["issuer"],
    ):
        assert not port_open(url), url
    leftover = subprocess.run(
        ["pgrep", "-f", f"devstack.local_api local --no-autoreload --host 127.0.0.1 --port {api_port}"],
        capture_output=True,
        text=True,
    )
    assert leftover.stdout.strip() == ""
    for url in (info["aws_endpoint_url"], info["dynamodb_endpoint_url"]):
        aws_port = url.rsplit(":", 1)[1]
        leftover = subprocess.run(
            ["pgrep", "-f", f"devstack.moto_process --port {aws_port}"], capture_output=True, text=True
        )
        assert leftover.stdout.strip() == ""


def test_stack_json_is_replaced_whole_never_rewritten_in_place(tmp_path):
    """A reader that waits for ``stack.json`` must never find it empty or half written: the
    stack writes a file beside it and renames it over, so an open reader keeps the old whole
    file and the path only ever names a complete one."""
    from devstack.stack import _write_atomically

    path = tmp_path / "stack.json"
    _write_atomically(path, json.dumps({"api_url": "http://127.0.0.1:1"}))
    with path.open() as reader:
        _write_atomically(path, json.dumps({"api_url": "http://127.0.0.1:2"}))
        assert json.loads(reader.read()) == {"api_url": "http://127.0.0.1:1"}
    assert json.loads(path.read_text()) == {"api_url": "http://127.0.0.1:2"}
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]
