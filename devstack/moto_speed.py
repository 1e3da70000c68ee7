"""Take per-request work off moto's server that buys nothing.

Found by profiling moto with py-spy, and logging its garbage collections, under ``make bench``.

- **Backend lookup.** moto's server picks the backend of each request under one process-wide
  lock, and to do so it lists moto's package directory (``os.listdir`` and ``os.path.isdir``
  on some 200 entries) and tries the URL patterns of every service
  (``DomainDispatcherApplication.get_backend_for_host``). The answer depends only on the host
  name it infers, so it is memoised per host. That lookup was about a quarter of moto's busy
  CPU time on ``POST /v1/images``, all of it serialised by the lock.
- **SQS retention check.** For every message a ReceiveMessage hands out, moto checks the
  queue's retention period by building *all* the queue's attributes, which counts every
  message in the queue three ways (``SQSBackend.is_message_valid_based_on_retention_period``
  → ``Queue.attributes``): quadratic in the queue's depth, 13 % of moto's busy time while a
  500-item job drained. It reads the one attribute instead; the answer is the same.
- **Garbage-collection pauses** (the moto process only, :func:`freeze_after_full_collections`):
  full collections walk every object moto stores, holding the GIL, for longer as the heap grows.

This changes the stand-in server, not the application: chalicelib still talks to it over HTTP,
and every request still reaches the same moto backend as before.
"""

from __future__ import annotations

import threading
from typing import Any

_applied = False
_frozen = False
_lock = threading.Lock()
HOSTS_REMEMBERED = 1024  # distinct inferred host names (a few per service and region in use)


def speed_up_moto_server() -> None:
    """Memoise moto's backend lookup per inferred host (``get_backend_for_host``) and read the
    one attribute SQS's retention check needs. Idempotent.

    Example::

        speed_up_moto_server()
        KeepAliveServer(DomainDispatcherApplication(create_backend_app)).start()
    """
    global _applied
    with _lock:
        if _applied:
            return
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        original = DomainDispatcherApplication.get_backend_for_host
        found: dict[str | None, Any] = {}  # the patterns are moto's module-level index, one for all instances

        def get_backend_for_host(self: Any, host: str | None) -> Any:
            try:
                return found[host]
            except KeyError:
                backend = original(self, host)
                if len(found) < HOSTS_REMEMBERED:
                    found[host] = backend
                return backend

        DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]

        from moto.core.utils import unix_time
        from moto.sqs.models import SQSBackend

        def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
            retention_s = int(self.get_queue(queue_name).message_retention_period)
            return retention_s + message.sent_timestamp / 1000 > unix_time()

        SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
        _applied = True


def freeze_after_full_collections() -> None:
    """After each full (generation 2) garbage collection, move every surviving object to the
    permanent generation (``gc.freeze()``), so the next full collection scans only what was
    allocated since. Idempotent. For the moto process only: it affects the whole interpreter.

    moto keeps every item, object and message it serves as Python objects: more than a
    million of them within two minutes of ``make bench``. A full collection walks them all
    holding the GIL, so the pauses grew with the heap (0.3 s at 0.55 million objects, 0.55 s at
    1.25 million, logged with ``gc.callbacks``) until calls timed out (PynamoDB's 5 s) and the
    SDK retried them. Objects that survived a full collection are moto's stored state; cycles
    they form later are not collected, a bounded cost for a dev or test server.
    Source: Python docs, ``gc.freeze`` ("avoid ... copy-on-write" and pauses in long-lived
    processes) and ``gc.callbacks``.

    Example::

        freeze_after_full_collections()  # in devstack.moto_process, before serving
    """
    global _frozen
    with _lock:
        if _frozen:
            return
        import gc

        def after(phase: str, info: dict[str, Any]) -> None:
            if phase == "stop" and info.get("generation") == 2:
                gc.freeze()

        gc.callbacks.append(after)
        _frozen = True
