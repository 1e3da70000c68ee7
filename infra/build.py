"""Generate the infrastructure files from the code: ``python -m infra.build [--check]``.

Writes (or, with ``--check``, compares and fails on any difference):

- ``infra/resources.json``: the template Chalice merges into its own
  (:func:`infra.template.build_template`);
- ``.chalice/policy-<stage>.json`` for each stage: the least-privilege IAM policy
  (:func:`infra.policy.policy_document`).

Run it after changing a PynamoDB model, an AWS call in ``chalicelib``, an event handler
in ``app.py`` or a function timeout in ``.chalice/config.json``; commit the result.
``make package`` runs ``--check`` first, and ``tests/test_infra.py`` /
``tests/test_policy.py`` fail on a stale file.

Exit status: 0 written / up to date, 1 stale (``--check``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infra import names

ROOT = Path(__file__).resolve().parent.parent
RESOURCES_PATH = ROOT / "infra" / "resources.json"


def policy_path(stage: str) -> Path:
    """``.chalice/policy-<stage>.json``."""
    return ROOT / ".chalice" / f"policy-{stage}.json"


def render(document: Any) -> str:
    """The committed JSON form: 2-space indent, trailing newline, key order kept."""
    return json.dumps(document, indent=2) + "\n"


def generate() -> dict[Path, str]:
    """Every generated file's path and content.

    Raises:
        infra.policy.ScanError: an AWS call the policy scanner cannot map.
        ValueError: see :func:`infra.template.build_template`.
    """
    from infra.policy import policy_document, required_actions
    from infra.template import build_template

    files = {RESOURCES_PATH: render(build_template())}
    actions = required_actions()
    for stage in names.STAGES:
        files[policy_path(stage)] = render(policy_document(stage, actions))
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    """The paths whose committed content differs from ``files``."""
    return [path for path, text in files.items() if not path.exists() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m infra.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is out of date")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        outdated = stale(files)
        for path in outdated:
            print(f"out of date: {path.relative_to(ROOT)} (run: python -m infra.build)", file=sys.stderr)
        return 1 if outdated else 0
    for path, text in files.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
