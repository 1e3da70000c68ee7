"""`make demo`: generate images for real PartiPrompts through the HTTP API.

Uses a running stack (``.local/stack.json`` whose API answers), or starts one.
Signs in through the dev identity provider, calls ``POST /v1/images`` for the
first ``DEMO_N`` prompts (default 12), prints each image's id, seed and URL,
and exits non-zero if anything failed.
"""

from __future__ import annotations

import json
import os
import sys
import time

import requests

from devstack.prompts import first
from devstack.stack import ROOT, DevStack


def running_stack() -> dict | None:
    """The stack described by ``.local/stack.json`` if its API answers, else None."""
    path = ROOT / ".local" / "stack.json"
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    try:
        requests.get(info["api_url"] + "/health", timeout=2)
    except requests.RequestException:
        return None
    return info


def run_batch(console, session: requests.Session, api_url: str, token, n: int) -> int:
    """Submit the next ``n`` PartiPrompts as one batch job, follow it live, then build its ZIP.

    Returns the number of failures (failed items, or 1 if the job or ZIP did not finish).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prompts = first(2 * n)[n:]
    reply = session.post(api_url + "/v1/jobs", json={"prompts": prompts, "collection": "demo-batch",
                                                     "name": f"demo: {n} PartiPrompts"},
                         headers={"Authorization": f"Bearer {token()}"}, timeout=60)
    if reply.status_code != 202:
        console.print(f"[red]POST /v1/jobs answered {reply.status_code}: {reply.text[:200]}[/]")
        return 1
    job_id = reply.json()["job_id"]
    deadline = time.monotonic() + 300
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"batch job {job_id}", total=len(prompts))
        while True:
            job = session.get(f"{api_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token()}"},
                              timeout=30).json()
            progress.update(task, completed=job["counts"]["succeeded"] + job["counts"]["failed"])
            if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    console.print(f"job {job_id}: [bold]{job['status']}[/] — {job['counts']['succeeded']} succeeded, "
                  f"{job['counts']['failed']} failed {job['errors_by_reason'] or ''}")
    if job["status"] in ("queued", "running"):
        return 1
    archive = session.post(f"{api_url}/v1/jobs/{job_id}/archive",
                           headers={"Authorization": f"Bearer {token()}"}, timeout=60).json()
    while archive.get("status") not in ("ready", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        archive = session.get(f"{api_url}/v1/archives/{archive['archive_id']}",
                              headers={"Authorization": f"Bearer {token()}"}, timeout=30).json()
    if archive.get("status") != "ready":
        console.print(f"[red]the ZIP did not build: {archive}[/]")
        return 1
    console.print(f"ZIP of the job's images: {archive['url'][:100]}…")
    return int(job["counts"]["failed"])


def main() -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    n = int(os.environ.get("DEMO_N", "12"))
    stack = None
    info = running_stack()
    if info is None:
        console.print("no running stack found: starting one")
        stack = DevStack(env={**os.environ, **{k: "0" for k in ("PORT", "WEB_PORT", "FLUX_PORT", "IDP_PORT",
                                                                   "AWS_PORT")}})
        info = stack.start()
    try:
        token_url = info["auth"]["token_url"]
        if not token_url:
            console.print("[red]the stack uses an external identity provider; the demo needs the dev one[/]")
            return 2
        session = requests.Session()

        def token() -> str:
            reply = session.post(token_url, json={"user_id": "demo-user"}, timeout=5)
            reply.raise_for_status()
            return reply.json()["token"]

        table = Table(title=f"PromptCanvas demo: {n} PartiPrompts")
        table.add_column("#", justify="right")
        table.add_column("prompt", overflow="ellipsis", no_wrap=True, min_width=20, max_width=50)
        table.add_column("image id", no_wrap=True, min_width=26)
        table.add_column("seed", justify="right")
        table.add_column("ms", justify="right")
        table.add_column("url (presigned)", overflow="ellipsis", no_wrap=True, max_width=48)
        failures = 0
        started = time.monotonic()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("generating", total=n)
            for i, prompt in enumerate(first(n), 1):
                t0 = time.monotonic()
                reply = session.post(
                    info["api_url"] + "/v1/images",
                    json={"prompt": prompt, "collection": "demo"},
                    headers={"Authorization": f"Bearer {token()}"},
                    timeout=60,
                )
                ms = (time.monotonic() - t0) * 1000
                if reply.status_code == 201:
                    image = reply.json()["images"][0]
                    table.add_row(str(i), prompt, image["id"], str(image["seed"]), f"{ms:.0f}", image["url"])
                else:
                    failures += 1
                    table.add_row(str(i), prompt, f"[red]HTTP {reply.status_code}[/]", "", f"{ms:.0f}",
                                  reply.text[:200])
                progress.advance(task)
        console.print(table)
        failures += run_batch(console, session, info["api_url"], token, n)
        elapsed = time.monotonic() - started
        colour = "green" if failures == 0 else "red"
        console.print(f"[{colour}]{2 * n - failures}/{2 * n} images ({n} single, {n} in one batch job) "
                      f"in {elapsed:.1f} s; {failures} failed[/]")
        return 1 if failures else 0
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
