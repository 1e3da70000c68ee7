"""Leave out of ``deployment.zip`` what Lambda never runs: ``python -m infra.slim ZIP``.

Chalice zips every file of every wheel. Lambda imports none of these:

- botocore's and boto3's data for AWS services the code never calls (botocore's
  ``data/`` is 2/3 of the zip): only the services :func:`used_services` finds are kept,
  with the top-level files (endpoints, partitions, retry and default configuration);
- ``examples-1.json`` (documentation examples) of the kept services;
- in botocore's ``endpoints.json`` (1.2 MB, which every botocore session parses on its first
  client: about 54 ms of CPU here), the entries of the services not kept
  (:func:`trim_endpoints`; each partition's defaults stay, and endpoints are resolved by each
  service's rule set anyway);
- type stubs (``*.pyi``), bytecode caches, and ``tests`` directories inside packages.

Every pinned version stays as it is (the wheels' ``.dist-info`` are kept: they say which
versions are inside). A service the code starts calling is kept automatically, since
:func:`used_services` comes from the same scan as the IAM policies (:mod:`infra.policy`);
``tests/test_packaging.py`` imports the app from the slimmed zip and creates a client for
each of them.

Exit status: 0, and one line: size before, after, and the 25 MB goal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

GOAL_BYTES = 25 * 1000 * 1000  # "deployment zip <= 25 MB"
#: botocore service names the code reaches besides the scanned calls: PynamoDB's DynamoDB client.
IMPLICIT_SERVICES = frozenset({"dynamodb"})
SDK_PACKAGES = ("botocore", "boto3")
ENDPOINTS_ENTRY = "botocore/data/endpoints.json"


def used_services() -> frozenset[str]:
    """The botocore service names the code calls (the boto3 clients :func:`infra.policy.scan`
    finds, plus :data:`IMPLICIT_SERVICES`).

    Raises:
        infra.policy.ScanError: see :func:`infra.policy.scan`.
    """
    from infra.policy import IAM_PREFIX, scan

    by_prefix = {prefix: service for service, prefix in IAM_PREFIX.items()}
    found = {by_prefix[call.api.split(":", 1)[0]] for call in scan() if not call.api.startswith("pynamodb:")}
    return frozenset(found | IMPLICIT_SERVICES)


def excluded(name: str, services: Iterable[str]) -> bool:
    """Whether the zip entry ``name`` is left out (see the module docstring)."""
    parts = name.split("/")
    if name.endswith((".pyc", ".pyi")) or "__pycache__" in parts:
        return True
    if len(parts) > 2 and "tests" in parts[1:-1]:
        return True
    if parts[0] in SDK_PACKAGES and len(parts) > 3 and parts[1] == "data":
        return parts[2] not in set(services) or parts[-1] == "examples-1.json"
    return False


def endpoint_prefixes(services: Iterable[str]) -> frozenset[str]:
    """The ``endpoints.json`` keys of botocore ``services``: each model's ``endpointPrefix``
    (read from the pinned botocore installed here, the one the zip holds)."""
    import botocore.session

    session = botocore.session.get_session()
    return frozenset(session.get_service_model(name).endpoint_prefix for name in services)


def trim_endpoints(data: bytes, prefixes: Iterable[str]) -> bytes:
    """``endpoints.json`` with only the services whose endpoint prefix is in ``prefixes``, in
    every partition (the partitions and their defaults are kept whole).

    Raises:
        ValueError: not JSON, or not botocore's ``{"partitions": [...]}`` layout.
    """
    keep = set(prefixes)
    document = json.loads(data)
    partitions = document.get("partitions") if isinstance(document, dict) else None
    if not isinstance(partitions, list):
        raise ValueError("endpoints.json has no partitions list")
    for partition in partitions:
        partition["services"] = {k: v for k, v in (partition.get("services") or {}).items() if k in keep}
    return json.dumps(document, separators=(",", ":")).encode()


def slim(zip_path: Path, services: Iterable[str]) -> tuple[int, int]:
    """Rewrite ``zip_path`` without the excluded entries (atomically: a temporary file is
    renamed over it). Returns ``(bytes before, bytes after)``.

    Raises:
        zipfile.BadZipFile: not a zip.
    """
    services = frozenset(services)
    prefixes = endpoint_prefixes(services)
    before = zip_path.stat().st_size
    fd, tmp = tempfile.mkstemp(dir=zip_path.parent, suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                if info.filename == ENDPOINTS_ENTRY:
                    target.writestr(info, trim_endpoints(source.read(info), prefixes), zipfile.ZIP_DEFLATED)
                elif not excluded(info.filename, services):
                    with source.open(info) as src, target.open(info, "w") as dst:
                        shutil.copyfileobj(src, dst)
        os.replace(tmp, zip_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return before, zip_path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m infra.slim", description=__doc__.split("\n\n")[0])
    parser.add_argument("zip", type=Path)
    args = parser.parse_args(argv)
    before, after = slim(args.zip, used_services())
    verdict = "within" if after <= GOAL_BYTES else "OVER"
    print(
        f"deployment.zip: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB "
        f"({verdict} the {GOAL_BYTES / 1e6:.0f} MB goal; services kept: {', '.join(sorted(used_services()))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
