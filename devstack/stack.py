"""The local stack: real stand-ins for every cloud service, on 127.0.0.1.

Parts (each skipped when the environment already points somewhere else):

- AWS: moto in server mode unless ``AWS_ENDPOINT_URL`` is set: one process for S3, SQS, KMS and
  Secrets Manager (S3 sends its event notifications to SQS inside moto) and one for DynamoDB, which
  the app reaches through the SDK's service-specific ``AWS_ENDPOINT_URL_DYNAMODB``. Each moto
  process serves its requests under one interpreter lock, as real services do not, so the
  split lets the stand-ins use two cores;
- Flux: the Together-compatible emulator unless ``TOGETHER_BASE_URL`` and ``TOGETHER_API_KEYS`` are set;
- Auth: the dev identity provider unless ``CLERK_ISSUER``/``CLERK_JWKS_URL``/``CLERK_JWT_KEY`` is set;
  with it, ``CLERK_ADMIN_ORG_ID`` defaults to ``org_dev``, the organization the web client's
  "sign in as an organization admin" uses (nobody else is an admin);
- the API (``chalice local --no-autoreload``, through :mod:`devstack.local_api`) at ``api_url``
  (``PORT``, default 8000);
- the web client (frontend_dist/) at ``web_url`` (``WEB_PORT``, default 8001);
- the SQS poller, invoking the app's ``on_sqs_message`` handlers as Lambda would;
- the scheduler, invoking the app's ``@app.schedule`` handlers on their rates (``DEVSTACK_SCHEDULE_SCALE``).

Ports: ``PORT``, ``WEB_PORT``, ``AWS_PORT`` (4566), ``DYNAMODB_PORT`` (4569; a free one when
``AWS_PORT`` is 0), ``FLUX_PORT`` (8100), ``IDP_PORT`` (8200); 0 picks a free port. The URLs go
to ``.local/stack.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
DEV_KEYS = ["dev-key-1", "dev-key-2", "dev-key-3", "dev-key-4"]
#: Every port setting of the stack; a caller that wants free ports sets each to "0".
PORT_VARS = ("PORT", "WEB_PORT", "AWS_PORT", "DYNAMODB_PORT", "FLUX_PORT", "IDP_PORT")
DEV_ADMIN_ORG_ID = "org_dev"  # the admin organization of the dev stack (frontend_dist/js/auth.js devSignIn)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port(env: dict[str, str], name: str, default: int) -> int:
    value = int(env.get(name) or default)
    return value or free_port()


def wait_http(url: str, timeout_s: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers (any status below 500).

    Raises:
        RuntimeError: not up within ``timeout_s`` seconds, or ``proc`` exited.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout_s} s")


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a file beside it and a rename, so a reader that
    waits for ``path`` to appear (the tests, ``devstack.demo``, scripts) never reads it half
    written. Source: Python docs, ``os.replace`` (atomic on POSIX within one file system)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _terminate(proc: subprocess.Popen | None) -> None:
    """SIGTERM a child's process group, SIGKILL after 5 s. Idempotent."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class DevStack:
    """Starts and stops the local stack. ``start()`` returns the stack description."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    state_dir: Path = ROOT / ".local"
    run_pollers: bool = True
    quiet_api: bool = True
    _closers: list[Any] = field(default_factory=list)
    api_proc: subprocess.Popen | None = None
    moto_proc: subprocess.Popen | None = None
    dynamodb_proc: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)

    def start(self) -> dict[str, Any]:
        """Start every part, create the AWS resources, write ``.local/stack.json``.

        Raises:
            RuntimeError: a part did not start (everything started so far is stopped).
        """
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start_moto(self, port: int, app_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
        """One moto server process on ``port``; returns it and its URL once it answers."""
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.moto_process", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **app_env},
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._closers.append(lambda: _terminate(proc))
        wait_http(url + "/moto-api/data.json", proc=proc)
        return proc, url

    def _start(self) -> dict[str, Any]:
        env = self.env
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app_env: dict[str, str] = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)

        # 1. AWS
        if env.get("AWS_ENDPOINT_URL"):
            aws_url = env["AWS_ENDPOINT_URL"]
            app_env["AWS_ENDPOINT_URL_DYNAMODB"] = env.get("AWS_ENDPOINT_URL_DYNAMODB") or aws_url
        else:
            for name, value in (
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
            ):
                app_env[name] = env.get(name) or value
            os.environ.update(app_env)
            self.moto_proc, aws_url = self._start_moto(_port(env, "AWS_PORT", 4566), app_env)
            # AWS_PORT=0 (any free port) frees DynamoDB's default too, so parallel stacks never share one
            dynamodb_default = 0 if env.get("AWS_PORT") == "0" else 4569
            self.dynamodb_proc, dynamodb_url = self._start_moto(_port(env, "DYNAMODB_PORT", dynamodb_default), app_env)
            app_env["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb_url
        app_env["AWS_ENDPOINT_URL"] = aws_url

        # 2. Web server (its origin is needed for CORS and authorized parties)
        from devstack.web import WebServer

        config_js = self.state_dir / "config.js"
        web = WebServer(ROOT / "frontend_dist", config_js, port=_port(env, "WEB_PORT", 8001)).start()
        self._closers.append(web.stop)
        web_origins = [web.url, web.url.replace("127.0.0.1", "localhost")]

        # 3. Flux
        if env.get("TOGETHER_BASE_URL") and env.get("TOGETHER_API_KEYS"):
            flux_url = env["TOGETHER_BASE_URL"]
            self.parts["flux"] = None
        else:
            from devstack.flux_emulator import EmulatorConfig, FluxEmulator

            emu_env = {"FLUX_EMULATOR_KEYS": ",".join(DEV_KEYS), **env}
            emulator = FluxEmulator(EmulatorConfig.from_env(emu_env), port=_port(env, "FLUX_PORT", 8100)).start()
            self._closers.append(emulator.stop)
            self.parts["flux"] = emulator
            flux_url = emulator.url + "/v1"
            app_env["TOGETHER_BASE_URL"] = flux_url
            app_env["TOGETHER_API_KEYS"] = ",".join(emulator.config.keys or DEV_KEYS)

        # 4. Identity
        if env.get("CLERK_ISSUER") or env.get("CLERK_JWKS_URL") or env.get("CLERK_JWT_KEY"):
            auth = {"issuer": env.get("CLERK_ISSUER"), "jwks_url": env.get("CLERK_JWKS_URL"), "token_url": None}
            self.parts["idp"] = None
        else:
            from devstack.idp import DevIdentityProvider

            idp = DevIdentityProvider(port=_port(env, "IDP_PORT", 8200), default_azp=web.url).start()
            self._closers.append(idp.stop)
            self.parts["idp"] = idp
            auth = {"issuer": idp.issuer, "jwks_url": idp.jwks_url, "token_url": idp.token_url}
            app_env["CLERK_ISSUER"] = idp.issuer
            app_env["CLERK_JWKS_URL"] = idp.jwks_url
            app_env.setdefault("CLERK_AUTHORIZED_PARTIES", ",".join(web_origins))
            # The web client's "sign in as an organization admin" mints o = {id: DEV_ADMIN_ORG_ID, rol: admin}.
            app_env["CLERK_ADMIN_ORG_ID"] = env.get("CLERK_ADMIN_ORG_ID") or DEV_ADMIN_ORG_ID
        app_env.setdefault("ALLOW_LOOPBACK_WEBHOOKS", env.get("ALLOW_LOOPBACK_WEBHOOKS") or "1")
        app_env.setdefault("CORS_ALLOWED_ORIGINS", env.get("CORS_ALLOWED_ORIGINS") or ",".join(web_origins))

        # The app's settings in this process (pollers) and the API process.
        os.environ.update(app_env)
        from chalicelib.settings import get_settings

        get_settings.cache_clear()
        from devstack.resources import ensure_all

        ensure_all()

        # 5. API
        api_port = _port(env, "PORT", 8000)
        api_url = f"http://127.0.0.1:{api_port}"
        self.api_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack.local_api",  # chalice's CLI, with TCP_NODELAY on its connections
                "local",
                "--no-autoreload",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--stage",
                "local",
            ],
            cwd=ROOT,
            env={**os.environ, **app_env},
            stdout=subprocess.DEVNULL if self.quiet_api else None,
            stderr=subprocess.DEVNULL if self.quiet_api else None,
            start_new_session=True,
        )
        wait_http(api_url + "/health", proc=self.api_proc)

        # 6. SQS pollers: the same handlers Lambda runs.
        if self.run_pollers:
            import app as app_module
            from devstack.poller import pollers_for_app

            for poller in pollers_for_app(app_module):
                poller.start()
                self._closers.append(poller.stop)
                self.parts.setdefault("pollers", []).append(poller)

            # 7. Schedules: the cleanup sweeps and the stuck-work sweep, on their rates.
            from devstack.scheduler import schedules_for_app

            scale = float(env.get("DEVSTACK_SCHEDULE_SCALE") or 1)
            for schedule in schedules_for_app(app_module, scale):
                schedule.start()
                self._closers.append(schedule.stop)
                self.parts.setdefault("schedules", []).append(schedule)

        self.info = {
            "api_url": api_url,
            "web_url": web.url,
            "aws_endpoint_url": aws_url,
            "dynamodb_endpoint_url": app_env.get("AWS_ENDPOINT_URL_DYNAMODB") or aws_url,
            "flux_base_url": flux_url,
            "auth": auth,
        }
        _write_atomically(self.state_dir / "stack.json", json.dumps(self.info, indent=2))
        config_js.write_text(
            "// Written by the dev stack from .local/stack.json. Do not edit.\n"
            f"window.PROMPTCANVAS_CONFIG = {json.dumps({'apiBaseUrl': api_url, 'devAuth': auth})};\n"
        )
        return self.info

    def stop(self) -> None:
        """Stop the API process group and every in-process part. Idempotent."""
        _terminate(self.api_proc)
        self.api_proc = None
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
