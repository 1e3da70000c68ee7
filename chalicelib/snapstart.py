"""Lambda SnapStart: what must not be shared between execution environments restored from
the same snapshot.

With SnapStart (the API and worker functions, see docs/deploy.md), Lambda runs the
module-level code once per published version, snapshots the memory, and resumes every
new execution environment from that copy. Whatever the process held at snapshot time is
then identical in all of them:

- Python's ``random`` state: every copy would draw the same backoff jitter, the same
  key-pool start position and the same image seeds. :func:`after_restore` re-seeds it
  from ``os.urandom`` (``secrets``, ``uuid`` and ULIDs read ``os.urandom`` per call and
  need nothing).
- Open connections (boto3's and PynamoDB's urllib3 pools, the Flux client's
  ``requests`` session): sockets from the snapshot are dead or, worse, shared.
- Cached credentials: a boto3 client keeps the credentials it resolved at creation; a
  restored environment gets fresh ones in its environment variables. The cached
  Together keys and key-health snapshot are dropped too (read again on first use).

What is kept on purpose: botocore's shared data loader (parsed service models and endpoint
tables; no credentials, no connections), which :func:`before_snapshot` fills.

:func:`register` hands :func:`after_restore` to the runtime's ``snapshot_restore_py``
(part of the Lambda Python managed runtimes, absent locally: then it does nothing).
The hook must finish within Lambda's 10-second restore limit: it only drops objects,
it makes no network call.

Sources: AWS Lambda developer guide, "Lambda SnapStart runtime hooks for Python" and
"Handling uniqueness with Lambda SnapStart".
"""

from __future__ import annotations

import random

from chalicelib import aws


def after_restore() -> None:
    """Re-seed ``random`` and drop every connection pool and cached credential, so the next
    use builds fresh ones. Safe to call at any time (they are all lazily recreated)."""
    from chalicelib.db.base import reset_connections
    from chalicelib.flux import reset_flux_client, reset_key_pool

    random.seed()  # None: from os.urandom
    aws.reset_clients()
    reset_connections()  # every PynamoDB model's cached TableConnection (a botocore client)
    reset_flux_client()  # closes its requests session
    reset_key_pool()


#: Libraries the code imports inside the functions that use them (so ``import app`` stays light):
#: boto3, requests, Pillow, AES-GCM and Powertools' batch utilities. A test keeps this list
#: covering every such import in ``chalicelib``.
LAZY_IMPORTS = (
    "boto3",
    "boto3.s3.transfer",
    "botocore.config",
    "botocore.exceptions",
    "botocore.session",
    "requests",
    "requests.adapters",
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.exceptions",
    "PIL.Image",
    "PIL.ImageOps",
    "cryptography.exceptions",
    "cryptography.hazmat.primitives.ciphers.aead",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.data_classes.sqs_event",
)


def before_snapshot() -> int:
    """Import every ``chalicelib`` module and the libraries of :data:`LAZY_IMPORTS` (with every
    Pillow plugin registered), and read botocore's data for every service the code calls
    (:func:`chalicelib.aws.preload_sdk_data`). ``app.py``'s routes import their services when
    they first run, so a cold start without SnapStart loads only what its first request needs;
    with SnapStart the snapshot should hold them all, so no restored copy pays for an import,
    and its first client of each service parses no JSON.

    Returns:
        The number of ``chalicelib`` modules imported (already loaded ones included).
    """
    import importlib
    import pkgutil

    import chalicelib

    names = [info.name for info in pkgutil.walk_packages(chalicelib.__path__, "chalicelib.")]
    for name in (*names, *LAZY_IMPORTS):
        importlib.import_module(name)
    from PIL import Image

    Image.init()  # Pillow imports its format plugins on first use otherwise
    aws.preload_sdk_data()
    return len(names)


def register() -> bool:
    """Register :func:`before_snapshot` and :func:`after_restore` with the Lambda runtime.
    Returns whether the runtime provides ``snapshot_restore_py`` (False locally and in
    tests: nothing to do)."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
