"""Browser tests: the web client in Debian's Chromium, driven by Playwright (sync API), against the local stack.

Fixtures:

- ``stack`` (package): a whole DevStack (moto, Flux emulator, dev IdP, ``chalice local``, the web server,
  SQS pollers) on free ports with its state under a temporary directory, in its own process
  (``tests.browser.stack_runner``) so nothing it exports leaks into the unit tests' environment.
- ``browser`` (package): Chromium at ``/usr/bin/chromium`` (``make browser`` installs it).
- ``open_page(width)``: a fresh browser context and page at that viewport width, watched: any console
  error, uncaught page error, failed request or HTTP error response fails the test.
- ``shot(page, name)``: a full-page screenshot ``test-artifacts/{name}-{width}.png``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.stack import PORT_VARS

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("PROMPTCANVAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Variables that point the stack at existing services; the browser tests want a stack of their own.
SERVICE_VARS = (
    "AWS_ENDPOINT_URL",
    "TOGETHER_BASE_URL",
    "TOGETHER_API_KEYS",
    "TOGETHER_KEYS_SECRET_ID",
    "CLERK_ISSUER",
    "CLERK_JWKS_URL",
    "CLERK_JWT_KEY",
    "CLERK_AUTHORIZED_PARTIES",
    "CORS_ALLOWED_ORIGINS",
)
STACK_START_TIMEOUT_S = 90


def dev_stack_env(state_dir: Any) -> dict[str, str]:
    """The environment for a ``python -m devstack`` child: this process's, without the service
    settings the tests export, every server on a free port, and its state under ``state_dir``."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(dict.fromkeys(PORT_VARS, "0"))
    env["DEVSTACK_STATE_DIR"] = str(state_dir)
    return env


@dataclass
class Stack:
    """The running stack's URLs (``.local/stack.json`` of its state directory) and helpers."""

    info: dict[str, Any]
    state_dir: Path

    @property
    def web_url(self) -> str:
        return self.info["web_url"]

    @property
    def api_url(self) -> str:
        return self.info["api_url"]

    def token(self, user_id: str, **claims: Any) -> str:
        reply = requests.post(self.info["auth"]["token_url"], json={"user_id": user_id, **claims}, timeout=10)
        reply.raise_for_status()
        return reply.json()["token"]

    def api(self, method: str, path: str, user_id: str, **kwargs: Any) -> requests.Response:
        """Call the API directly as ``user_id`` (test set-up and checks, not the code under test)."""
        headers = {"Authorization": f"Bearer {self.token(user_id)}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("browser-stack")
    env = dev_stack_env(state_dir)
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.pop("AWS_PROFILE", None)
    log_path = state_dir / "stack.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.browser.stack_runner", str(state_dir)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack_file = state_dir / "stack.json"
    try:
        deadline = time.monotonic() + STACK_START_TIMEOUT_S
        while not stack_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"the dev stack did not start (exit {proc.poll()}); log tail:\n{tail}")
            time.sleep(0.1)
        yield Stack(json.loads(stack_file.read_text()), state_dir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """Everything that went wrong in a page: console errors, page errors, failed requests, HTTP errors."""

    problems: list[str] = field(default_factory=list)
    # the Account screen asks for the user's own Together key; with none saved the API answers 404
    allowed: list[re.Pattern[str]] = field(
        default_factory=lambda: [
            re.compile(r"HTTP 404: GET .*/v1/me/together-key$"),
            re.compile(r"status of 404.*/v1/me/together-key"),
        ]
    )

    def allow(self, pattern: str) -> None:
        """Expect problems matching ``pattern`` (a regex) in this test, e.g. a deliberate 401."""
        self.allowed.append(re.compile(pattern))

    def add(self, problem: str) -> None:
        if not any(p.search(problem) for p in self.allowed):
            self.problems.append(problem)

    def assert_clean(self) -> None:
        problems, self.problems = self.problems, []
        assert not problems, "the page reported problems:\n" + "\n".join(problems)


def watch_page(page: Any, watch: Watch) -> None:
    page.on("console", lambda msg: msg.type == "error" and watch.add(f"console error: {msg.text} ({msg.location})"))
    page.on("pageerror", lambda exc: watch.add(f"page error: {exc}"))
    page.on(
        "requestfailed",
        lambda req: _is_benign_abort(req) or watch.add(f"request failed: {req.method} {req.url} {req.failure}"),
    )
    page.on(
        "response",
        lambda resp: resp.status >= 400 and watch.add(f"HTTP {resp.status}: {resp.request.method} {resp.url}"),
    )


def _is_benign_abort(request: Any) -> bool:
    """A request the browser itself cancelled, which no user sees fail: a navigation that turned
    into a download (that is how downloads work), or the favicon (Chromium cancels its load when
    the page moves on or is captured; the server answered the same URL in the other tests)."""
    if request.failure != "net::ERR_ABORTED":
        return False
    url = request.url.split("?")[0]
    return "response-content-disposition=attachment" in request.url or url.endswith("/favicon.svg")


@pytest.fixture
def open_page(browser: Any, stack: Stack) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []
    watches: list[Watch] = []

    def _open(width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        context.set_default_timeout(15_000)
        page = context.new_page()
        watch = Watch()
        watch_page(page, watch)
        page.watch = watch  # the test reaches it as page.watch
        contexts.append(context)
        watches.append(watch)
        page.goto(stack.web_url + "/")
        return page

    yield _open
    for context in contexts:
        context.close()
    leftover = [p for w in watches for p in w.problems]
    if leftover:
        pytest.fail("the page reported problems:\n" + "\n".join(leftover))


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    ARTIFACTS.mkdir(exist_ok=True)

    def _shot(page: Any, name: str) -> Path:
        width = page.viewport_size["width"]
        path = ARTIFACTS / f"{name}-{width}.png"
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(150)
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot
