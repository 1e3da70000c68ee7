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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    args = parser.parse_args()

    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from devstack.moto_fidelity import make_dynamodb_writes_atomic
    from devstack.moto_speed import freeze_after_full_collections, speed_up_moto_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    make_dynamodb_writes_atomic()
    speed_up_moto_server()
    freeze_after_full_collections()
    from devstack.wsgi_server import KeepAliveServer

    # moto's own server app, served with keep-alive connections as AWS's endpoints are
    server = KeepAliveServer(DomainDispatcherApplication(create_backend_app), args.host, args.port).start()
    host, port = server.host, server.port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ready http://{host}:{port}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
