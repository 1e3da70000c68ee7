"""moto in server mode in its own process (the dev stack's AWS), with DynamoDB's write atomicity.

``python -m devstack.moto_process --port N`` serves until SIGTERM/SIGINT. A separate process
keeps moto's CPU work off the dev stack's own interpreter (pollers, emulator), as AWS is off
Lambda's. Prints ``ready <url>`` on stdout once it answers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.wsgi_server import KeepAliveServer


def start_server(host: str = "127.0.0.1", port: int = 0) -> KeepAliveServer:
    """moto's own server app with DynamoDB's atomicity (:mod:`devstack.moto_fidelity`) and
    the per-request savings of :mod:`devstack.moto_speed`, served with keep-alive connections
    as AWS's endpoints are (:class:`~devstack.wsgi_server.KeepAliveServer`; port 0: a free one).
    The dev stack's moto processes and the tests' in-process moto both start it this way.

    Raises:
        OSError: the port cannot be bound.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from devstack.moto_fidelity import make_dynamodb_writes_atomic
    from devstack.moto_speed import speed_up_moto_server
    from devstack.wsgi_server import KeepAliveServer

    make_dynamodb_writes_atomic()
    speed_up_moto_server()
    return KeepAliveServer(DomainDispatcherApplication(create_backend_app), host, port).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    args = parser.parse_args()

    from devstack.moto_speed import freeze_after_full_collections

    freeze_after_full_collections()
    server = start_server(args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ready {server.url}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
