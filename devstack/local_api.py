"""``chalice local`` as the dev stack runs it: the same CLI, with Nagle's algorithm off.

``python -m devstack.local_api local --no-autoreload --host H --port N [--stage S]`` takes
``chalice``'s own arguments. Chalice's dev server (``chalice.local.ChaliceRequestHandler``, an
``http.server`` handler that keeps HTTP/1.1 connections open) writes a response's headers and
its body in two ``send`` calls. With Nagle's algorithm on, the body waits until the client
acknowledges the headers, and a client on a kept-alive connection delays that acknowledgement
(about 40 ms on Linux): every response took 40 ms or more, whatever the route did. The standard
library's own switch for that, ``StreamRequestHandler.disable_nagle_algorithm``, sets
``TCP_NODELAY`` on each accepted connection. API Gateway, in front of the deployed functions,
has nothing of the kind.
"""

from __future__ import annotations

import sys

from chalice import local
from chalice.cli import main

local.ChaliceRequestHandler.disable_nagle_algorithm = True

if __name__ == "__main__":
    sys.exit(main())
