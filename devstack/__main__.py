"""`make dev`: run the local stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    from devstack.stack import ROOT, DevStack

    console = Console()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    stack = DevStack(quiet_api=False, state_dir=Path(os.environ.get("DEVSTACK_STATE_DIR") or ROOT / ".local"))
    with console.status("starting the local stack…"):
        try:
            info = stack.start()
        except Exception as exc:  # noqa: BLE001
            console.print(f"[red]the stack failed to start:[/] {exc}")
            return 1
    table = Table(title=f"PromptCanvas dev stack (ready in {time.monotonic() - started:.1f} s)")
    table.add_column("part")
    table.add_column("url")
    table.add_row("API", info["api_url"])
    table.add_row("web client", info["web_url"])
    table.add_row("AWS (moto): S3, SQS, KMS, Secrets Manager", info["aws_endpoint_url"])
    table.add_row("AWS (moto): DynamoDB", info["dynamodb_endpoint_url"])
    table.add_row("Flux", info["flux_base_url"])
    table.add_row("auth issuer", str(info["auth"]["issuer"]))
    table.add_row("auth token endpoint", str(info["auth"]["token_url"]))
    console.print(table)
    console.print("written to .local/stack.json — Ctrl-C stops everything")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            if stack.api_proc is not None and stack.api_proc.poll() is not None:
                console.print("[red]the API process exited[/]")
                break
    finally:
        stack.stop()
        console.print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
