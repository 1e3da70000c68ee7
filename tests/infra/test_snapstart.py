"""SnapStart: the after-restore hook gives each restored environment its own random state,
connections and credentials, and the app registers it with the Lambda runtime's
``snapshot_restore_py`` when that module exists (a stand-in module here: it is part of
the Lambda Python runtime, not of PyPI's dependencies)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chalicelib import aws, snapstart

ROOT = Path(__file__).resolve().parents[2]


def test_restored_copies_draw_different_random_numbers() -> None:
    """Two environments restored from one snapshot start with the same ``random`` state."""
    random.seed(20261130)  # the state frozen in the snapshot
    snapshot = random.getstate()
    snapstart.after_restore()
    first = [random.random() for _ in range(4)]
    random.setstate(snapshot)
    snapstart.after_restore()
    second = [random.random() for _ in range(4)]
    random.setstate(snapshot)
    without_hook = [random.random() for _ in range(4)]
    random.setstate(snapshot)
    assert first != second, "each restore must re-seed"
    assert without_hook == [random.random() for _ in range(4)], "(the frozen state repeats without the hook)"


def test_connections_and_credentials_are_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.db import ALL_MODELS, ImageModel
    from chalicelib.flux import client as flux_client
    from chalicelib.flux import keypool

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "snapshot-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "snapshot-secret")
    aws.reset_clients()
    before = aws.client("sqs")
    assert before._request_signer._credentials.access_key == "snapshot-key"
    connection = ImageModel._get_connection()
    assert ImageModel._connection is connection
    flux_client._client = object.__new__(flux_client.FluxClient)  # as if built during init
    flux_client._client._session = None
    closed: list[bool] = []
    flux_client._client.close = lambda: closed.append(True)  # type: ignore[method-assign]
    keypool._pool = object.__new__(keypool.KeyPool)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "restored-key")  # Lambda's fresh credentials after restore
    snapstart.after_restore()

    after = aws.client("sqs")
    assert after is not before
    assert after._request_signer._credentials.access_key == "restored-key"
    assert all(model._connection is None for model in ALL_MODELS)
    assert ImageModel._get_connection() is not connection
    assert flux_client._client is None and closed == [True]
    assert keypool._pool is None
    aws.reset_clients()


def _files_read_making_clients(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The botocore data files read while making a client of every service, after a restore."""
    from botocore import loaders

    reads: list[str] = []
    real = loaders.JSONFileLoader.load_file

    def counting(self, file_path, *args, **kwargs):
        reads.append(file_path)
        return real(self, file_path, *args, **kwargs)

    monkeypatch.setattr(loaders.JSONFileLoader, "load_file", counting)
    snapstart.after_restore()
    session = aws.botocore_session()
    for service in aws.SERVICES:
        session.create_client(service, region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b")
    return reads


def test_a_restored_process_makes_its_clients_without_reading_sdk_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aws, "_loader", None)  # a fresh process's loader
    assert _files_read_making_clients(monkeypatch)  # (without the preload, each client reads its files)
    monkeypatch.setattr(aws, "_loader", None)
    aws.preload_sdk_data()  # what before_snapshot does after its imports
    assert _files_read_making_clients(monkeypatch) == []
    aws.reset_clients()


def test_the_preloaded_services_are_the_ones_the_code_calls() -> None:
    from infra.slim import used_services

    assert set(aws.SERVICES) == used_services()


FAKE_RUNTIME = """
hooks = []
before = []


def register_after_restore(func, *args, **kwargs):
    hooks.append(func)
    return func


def register_before_snapshot(func, *args, **kwargs):
    before.append(func)
    return func
"""


def test_the_app_registers_the_hook_with_the_runtime(tmp_path: Path) -> None:
    (tmp_path / "snapshot_restore_py.py").write_text(FAKE_RUNTIME)
    script = textwrap.dedent(
        """
        import app, snapshot_restore_py
        from chalicelib import snapstart
        assert snapshot_restore_py.hooks == [snapstart.after_restore], snapshot_restore_py.hooks
        assert snapshot_restore_py.before == [snapstart.before_snapshot], snapshot_restore_py.before
        print("registered")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "registered" in proc.stdout, proc.stderr[-2000:]


def test_without_the_runtime_module_nothing_is_registered() -> None:
    assert snapstart.register() is False


def test_a_cold_import_loads_only_what_the_first_request_needs_and_the_snapshot_loads_all() -> None:
    """``import app`` leaves the jobs, uploads, archives and video modules, the Flux client, the
    key pool and the DynamoDB models unloaded (each route imports its own);
    :func:`before_snapshot` imports every module, as SnapStart's snapshot should."""
    import subprocess
    import sys

    code = (
        "import sys, app\n"
        "lazy = ['chalicelib.jobs.worker', 'chalicelib.jobs.submit', 'chalicelib.services.archives',\n"
        "        'chalicelib.services.uploads', 'chalicelib.services.videos', 'chalicelib.flux.client',\n"
        "        'chalicelib.flux.keypool', 'chalicelib.services.usage', 'chalicelib.db.images', 'PIL']\n"
        "print(sorted(m for m in lazy if m in sys.modules))\n"
        "from chalicelib import snapstart\n"
        "n = snapstart.before_snapshot()\n"
        "print(n, sorted(m for m in [*lazy, 'boto3', 'PIL.PngImagePlugin'] if m not in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    first, second = out.stdout.strip().splitlines()
    assert first == "[]", out.stdout
    count, missing = second.split(" ", 1)
    assert int(count) > 50 and missing == "[]", out.stdout


def _function_level_imports(path: Path) -> set[str]:
    """Modules imported inside functions of ``path`` (``from M import N`` gives ``M``)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found.update(alias.name for alias in inner.names)
                elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                    found.add(inner.module)
    return found


def test_the_snapshot_imports_every_library_the_code_imports_late() -> None:
    """A library imported inside a function (to keep ``import app`` light) is imported by
    :func:`before_snapshot` too, so a restored process does not pay for it on a request."""
    late = set()
    for path in (ROOT / "chalicelib").rglob("*.py"):
        late |= _function_level_imports(path)
    third_party = {
        m for m in late if m.split(".")[0] not in sys.stdlib_module_names | {"chalicelib", "snapshot_restore_py"}
    }
    assert third_party, "(the scan finds the late imports)"
    missing = sorted(m for m in third_party if not any(x == m or x.startswith(m + ".") for x in snapstart.LAZY_IMPORTS))
    assert missing == [], f"add to snapstart.LAZY_IMPORTS: {missing}"
