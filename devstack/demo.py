"""`make demo`: image in, image out, dataset out, through the HTTP API on images it makes itself.

Uses a running stack (``.local/stack.json`` whose API answers), or starts one, and signs in
through the dev identity provider. Then, with live progress:

1. makes ``DEMO_IMAGES`` (default 20) small product-like pictures with Pillow (256x256 PNGs)
   and packs them into one ZIP;
2. uploads the ZIP with ``POST /v1/uploads`` (a presigned POST straight to S3) into a fresh
   collection and follows the unpacking (``GET /v1/uploads/{id}``) until every file has a verdict;
3. runs one prompt over the collection (``POST /v1/jobs {prompt, collection_images}``) with
   the first catalog model that edits an image, after printing the count and the cost
   estimate (megapixels × price per megapixel × steps / default steps, from ``GET /v1/models``),
   and follows the job until it ends;
4. asks for the job's ImageFolder export (``POST /v1/jobs/{id}/archive {"format": "imagefolder"}``),
   downloads and unpacks it under ``.local/demo/``, and loads it with Hugging Face ``datasets``
   (``load_dataset("imagefolder", data_dir=...)``), printing its rows and columns.

Prints a summary and exits non-zero if any step failed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Callable
from typing import Any

import requests
from PIL import Image, ImageDraw

from devstack.stack import PORT_VARS, ROOT, DevStack

DEMO_PROMPT = "the same product on a white marble table, soft studio light, catalog photo"
POLL_S = 0.3  # seconds between status reads
STEP_TIMEOUT_S = 300  # seconds one step may take before the demo gives up
IMAGE_SIDE = 256  # pixels


class DemoFailed(Exception):
    """A step did not finish as it should; the message says which and why."""


def running_stack() -> dict | None:
    """The stack described by ``.local/stack.json`` if its API answers, else None."""
    path = ROOT / ".local" / "stack.json"
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    try:
        requests.get(info["api_url"] + "/health", timeout=2)
    except requests.RequestException:
        return None
    return info


def product_image(number: int) -> bytes:
    """A 256x256 PNG: a coloured "product" (a shape and its number) on a plain background."""
    hue = (number * 47) % 256
    img = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (235, 235 - hue // 8, 225))
    draw = ImageDraw.Draw(img)
    colour = (hue, (hue * 3) % 256, 255 - hue)
    box = (64, 56, 192, 200)
    if number % 3 == 0:
        draw.ellipse(box, fill=colour, outline=(40, 40, 40), width=3)
    elif number % 3 == 1:
        draw.rounded_rectangle(box, radius=18, fill=colour, outline=(40, 40, 40), width=3)
    else:
        draw.polygon([(128, 48), (200, 200), (56, 200)], fill=colour, outline=(40, 40, 40))
    draw.text((110, 214), f"#{number:02d}", fill=(30, 30, 30))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def make_zip(count: int) -> bytes:
    """``count`` product images as ``product-01.png`` ... in one ZIP (stored: PNGs are compressed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for number in range(1, count + 1):
            zf.writestr(f"product-{number:02d}.png", product_image(number))
    return out.getvalue()


class Client:
    """The API as the signed-in demo user (a fresh dev session token for every call)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.api_url = info["api_url"]
        self.token_url = info["auth"]["token_url"]
        self.session = requests.Session()

    def _token(self) -> str:
        reply = self.session.post(self.token_url, json={"user_id": "demo-user"}, timeout=5)
        reply.raise_for_status()
        return reply.json()["token"]

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """``method path`` with JSON; the decoded body, or DemoFailed naming the status and error."""
        headers = {"Authorization": f"Bearer {self._token()}"}
        reply = self.session.request(method, self.api_url + path, headers=headers, timeout=60, **kwargs)
        if reply.status_code not in expect:
            raise DemoFailed(f"{method} {path} answered {reply.status_code}: {reply.text[:300]}")
        return reply.json() if reply.content else None


def wait(read: Callable[[], Any], done: Callable[[Any], bool], on_read: Callable[[Any], None], what: str) -> Any:
    """Read until ``done`` (calling ``on_read`` with each read), at most :data:`STEP_TIMEOUT_S` seconds."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        value = read()
        on_read(value)
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} did not finish within {STEP_TIMEOUT_S} s")
        time.sleep(POLL_S)


def upload_zip(console: Any, client: Client, data: bytes, count: int, collection: str) -> dict[str, Any]:
    """Upload the ZIP through a presigned POST and follow the unpacking. Returns the final upload."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    made = client.call(
        "POST",
        "/v1/uploads",
        expect=(201,),
        json={
            "filename": "demo-products.zip",
            "content_type": "application/zip",
            "size_bytes": len(data),
            "collection": collection,
        },
    )
    sent = requests.post(made["url"], data=made["fields"], files={"file": ("demo-products.zip", data)}, timeout=60)
    if sent.status_code not in (200, 201, 204):
        raise DemoFailed(f"S3 refused the presigned POST: {sent.status_code} {sent.text[:200]}")
    upload_id = made["upload_id"]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"unpacking {upload_id}", total=count)

        def show(upload: dict[str, Any]) -> None:
            counts = upload.get("file_counts") or {}
            progress.update(task, completed=sum(counts.values()), description=f"unpacking: {upload['status']}")

        return wait(
            lambda: client.call("GET", f"/v1/uploads/{upload_id}"),
            lambda u: u["status"] in ("ready", "rejected"),
            show,
            "unpacking the ZIP",
        )


def edit_model(catalog: dict[str, Any]) -> dict[str, Any]:
    """The first catalog model that edits an image (takes ``image_url``)."""
    for model in catalog["models"]:
        if (model.get("image_inputs") or {}).get("image_url"):
            return model
    raise DemoFailed("the catalog has no model that edits an image")


def price_per_image(model: dict[str, Any], width: int, height: int) -> float:
    """USD for one image: megapixels × price per megapixel (× steps / default steps: at the default, 1)."""
    return width * height / 1e6 * float(model.get("price_per_mp") or 0)


def run_job(console: Any, client: Client, body: dict[str, Any]) -> dict[str, Any]:
    """Submit the job and follow it live (succeeded + failed of total, ETA). Returns the final job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    job = client.call("POST", "/v1/jobs", expect=(202,), json=body)
    job_id = job["job_id"]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"job {job_id}", total=job["total"])

        def show(current: dict[str, Any]) -> None:
            counts = current["counts"]
            eta = current.get("eta_seconds")
            note = f" ETA {eta:.0f} s" if isinstance(eta, int | float) else ""
            progress.update(
                task,
                completed=counts["succeeded"] + counts["failed"],
                description=f"job {job_id}: {current['status']}{note}",
            )

        return wait(
            lambda: client.call("GET", f"/v1/jobs/{job_id}"),
            lambda j: j["status"] not in ("queued", "running"),
            show,
            "the job",
        )


def export_dataset(console: Any, client: Client, job_id: str) -> tuple[dict[str, Any], Any]:
    """Build the job's ImageFolder export, download and unpack it, load it with ``datasets``.

    Returns:
        (the archive's JSON, the loaded ``train`` split).
    """
    archive = client.call("POST", f"/v1/jobs/{job_id}/archive", expect=(201, 202), json={"format": "imagefolder"})
    with console.status("building the ImageFolder export…"):
        archive = wait(
            lambda: client.call("GET", f"/v1/archives/{archive['archive_id']}"),
            lambda a: a["status"] in ("ready", "failed"),
            lambda a: None,
            "the export",
        )
    if archive["status"] != "ready":
        raise DemoFailed(f"the export failed: {archive.get('error')}")
    data = requests.get(archive["url"], timeout=120).content
    target = ROOT / ".local" / "demo" / f"export-{job_id}"
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(target)
    console.print(f"export: {len(data):,} bytes, unpacked into {target.relative_to(ROOT)}")
    with console.status("loading it with datasets…"):
        from datasets import load_dataset

        dataset = load_dataset("imagefolder", data_dir=str(target), cache_dir=str(target.parent / "hf-cache"))
    return archive, dataset["train"]


def main() -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    count = int(os.environ.get("DEMO_IMAGES", "20"))
    stack = None
    info = running_stack()
    if info is None:
        console.print("no running stack found: starting one")
        stack = DevStack(env={**os.environ, **dict.fromkeys(PORT_VARS, "0")})
        info = stack.start()
    started = time.monotonic()
    summary = Table(title="PromptCanvas demo: images in, edited images and a dataset out", show_header=False)
    summary.add_column("step")
    summary.add_column("result")
    try:
        if not info["auth"]["token_url"]:
            console.print("[red]the stack uses an external identity provider; the demo needs the dev one[/]")
            return 2
        client = Client(info)
        collection = f"demo-products-{int(time.time())}"

        data = make_zip(count)
        console.print(f"made {count} product images ({IMAGE_SIDE}×{IMAGE_SIDE} PNG), ZIP of {len(data):,} bytes")
        upload = upload_zip(console, client, data, count, collection)
        counts = upload.get("file_counts") or {}
        verdicts = f"{counts.get('ready', 0)} ready, {counts.get('rejected', 0)} rejected"
        summary.add_row("upload", f"{upload['status']}: {verdicts}")
        if upload["status"] != "ready" or not counts.get("ready"):
            raise DemoFailed(f"the ZIP was not unpacked: {upload.get('error') or counts}")

        model = edit_model(client.call("GET", "/v1/models"))
        ready = int(counts["ready"])
        each = price_per_image(model, IMAGE_SIDE, IMAGE_SIDE)
        console.print(
            f"one prompt over “{collection}”: {ready} images with {escape(model['name'])}, "
            f"estimated cost ${ready * each:.4f} ({ready} × ${each:.4f})"
        )
        job = run_job(
            console,
            client,
            {
                "prompt": DEMO_PROMPT,
                "collection_images": collection,
                "model": model["id"],
                "width": IMAGE_SIDE,
                "height": IMAGE_SIDE,
                "name": f"demo: {ready} product photos",
                "collection": f"{collection}-edited",
            },
        )
        job_counts = job["counts"]
        outcome = f"{job_counts['succeeded']} succeeded, {job_counts['failed']} failed"
        summary.add_row("job", f"{job['job_id']} {job['status']}: {outcome}")
        if not job_counts["succeeded"]:
            raise DemoFailed("the job made no image")

        archive, train = export_dataset(console, client, job["job_id"])
        summary.add_row("export", f"{archive['archive_id']} ({archive['format']}, {archive['bytes']:,} bytes)")
        summary.add_row("dataset", f"{train.num_rows} rows; columns: {', '.join(train.column_names)}")
        rows = Table(title="the first rows, as datasets loads them")
        shown = ("input", "output", "prompt", "seed", "model", "width", "height")
        for column in shown:
            rows.add_column(column, overflow="ellipsis", no_wrap=True, max_width=36)

        def cell(value: Any) -> str:
            if hasattr(value, "size"):
                return f"{value.format} {value.size[0]}×{value.size[1]}"
            return escape(str(value))

        for row in train.select(range(min(3, train.num_rows))):
            rows.add_row(*(cell(row.get(c)) for c in shown))
        console.print(rows)
        paired = sum(1 for row in train if row.get("input") is not None and row.get("output") is not None)
        summary.add_row("pairs", f"{paired} of {train.num_rows} rows pair an input with its output")
        summary.add_row("time", f"{time.monotonic() - started:.1f} s")
        console.print(summary)
        ok = paired == train.num_rows == job_counts["succeeded"] and job_counts["failed"] == 0
        console.print("[green]done[/]" if ok else "[red]some images did not make it (see above)[/]")
        return 0 if ok else 1
    except DemoFailed as exc:
        console.print(summary)
        console.print(f"[red]demo failed: {escape(str(exc))}[/]")
        return 1
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
