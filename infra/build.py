"""Generate the infrastructure files from the code: ``python -m infra.build [--check]``.

Writes (or, with ``--check``, compares and fails on any difference):

- ``infra/resources.json``: the template Chalice merges into its own
  (:func:`infra.template.build_template`);
- ``.chalice/policy-<stage>-<function>.json`` for each stage and Lambda function: the
  least-privilege IAM policy of that function's role (:func:`infra.policy.policies`);
- ``.chalice/config.json``: each function's ``iam_policy_file`` under
  ``stages.<stage>.lambda_functions.<function>`` (the rest of the file is kept as is).

Other ``.chalice/policy-*.json`` files are removed (``--check`` reports them).

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


CONFIG_PATH = ROOT / ".chalice" / "config.json"


def policy_path(stage: str, function: str) -> Path:
    """``.chalice/policy-<stage>-<function>.json``."""
    from infra.policy import policy_file

    return ROOT / ".chalice" / policy_file(stage, function)


def render(document: Any) -> str:
    """The committed JSON form: 2-space indent, trailing newline, key order kept."""
    return json.dumps(document, indent=2) + "\n"


def chalice_config(
    config: dict[str, Any], functions: list[str], stages: tuple[str, ...] = names.STAGES
) -> dict[str, Any]:
    """``config`` (``.chalice/config.json``) with each stage's functions pointing at their own
    policy file and no stage-wide ``iam_policy_file`` (a function left out then has no
    policy file and ``chalice package`` fails, instead of sharing a broader role)."""
    from infra.policy import policy_file

    config = json.loads(json.dumps(config))
    for stage in stages:
        stage_cfg = config["stages"].setdefault(stage, {})
        stage_cfg["autogen_policy"] = False
        stage_cfg.pop("iam_policy_file", None)
        lambda_functions = stage_cfg.setdefault("lambda_functions", {})
        for function in functions:
            lambda_functions.setdefault(function, {})["iam_policy_file"] = policy_file(stage, function)
    return config


def generate() -> dict[Path, str]:
    """Every generated file's path and content.

    Raises:
        infra.policy.ScanError: an AWS call the policy scanner cannot map.
        ValueError: see :func:`infra.template.build_template`.
    """
    from infra.policy import functions, policies, scan
    from infra.template import build_template, load_config

    files = {RESOURCES_PATH: render(build_template())}
    calls = scan()
    for stage in names.STAGES:
        for function, document in policies(stage, calls).items():
            files[policy_path(stage, function)] = render(document)
    config = chalice_config(load_config(CONFIG_PATH), [fn.name for fn in functions()])
    files[CONFIG_PATH] = render(config)
    return files


def stage_files(stage: str, out: Path) -> dict[Path, str]:
    """What ``chalice package --stage <stage>`` reads from ``.chalice/``, for any stage name
    (``names.STAGE_PATTERN``): ``config.json`` with the stage (a stage it does not list
    gets ``dev``'s settings) and the stage's policy files, as paths under ``out``.

    Raises:
        ValueError: ``stage`` does not match ``names.STAGE_PATTERN``.
        infra.policy.ScanError: see :func:`generate`.
    """
    import re

    from infra.policy import functions, policies
    from infra.template import load_config

    if not re.fullmatch(names.STAGE_PATTERN, stage):
        raise ValueError(f"stage {stage!r} does not match {names.STAGE_PATTERN}")
    config = load_config(CONFIG_PATH)
    if stage not in config["stages"]:
        config["stages"][stage] = json.loads(json.dumps(config["stages"][names.STAGES[0]]))
    files = {out / "config.json": render(chalice_config(config, [fn.name for fn in functions()], (stage,)))}
    for function, document in policies(stage).items():
        files[out / policy_path(stage, function).name] = render(document)
    return files


def leftovers(files: dict[Path, str]) -> list[Path]:
    """Policy files in ``.chalice/`` that no longer belong to a function."""
    return sorted(p for p in (ROOT / ".chalice").glob("policy-*.json") if p not in files)


def stale(files: dict[Path, str]) -> list[Path]:
    """The paths whose committed content differs from ``files``."""
    return [path for path, text in files.items() if not path.exists() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m infra.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is out of date")
    parser.add_argument("--stage", help="with --out: write one stage's .chalice files (any stage name)")
    parser.add_argument("--out", type=Path, help="with --stage: the directory to write them to")
    args = parser.parse_args(argv)
    if bool(args.stage) != bool(args.out):
        parser.error("--stage and --out go together")
    if args.stage:
        args.out.mkdir(parents=True, exist_ok=True)
        for path, text in stage_files(args.stage, args.out).items():
            path.write_text(text, encoding="utf-8")
        return 0
    files = generate()
    if args.check:
        outdated = stale(files) + leftovers(files)
        for path in outdated:
            print(f"out of date: {path.relative_to(ROOT)} (run: python -m infra.build)", file=sys.stderr)
        return 1 if outdated else 0
    for path, text in files.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    for path in leftovers(files):
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
