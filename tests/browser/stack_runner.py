"""Run a :class:`devstack.stack.DevStack` in its own process for the browser tests.

``python -m tests.browser.stack_runner STATE_DIR`` starts the stack with the environment it was given
(the fixture passes every port as 0 and no service variables), writes ``STATE_DIR/stack.json`` and
serves until SIGTERM. A separate process keeps the stack's moto, pollers and the environment it
exports (``AWS_ENDPOINT_URL``, ``CLERK_ISSUER``, ...) out of the pytest process and its unit tests.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path


def main() -> int:
    from devstack.stack import DevStack

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack = DevStack(env=dict(os.environ), state_dir=Path(sys.argv[1]), quiet_api=False)
    stack.start()
    print("stack ready", flush=True)
    try:
        while not stop.wait(0.5):
            if stack.api_proc is not None and stack.api_proc.poll() is not None:
                print("the API process exited", flush=True)
                return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
