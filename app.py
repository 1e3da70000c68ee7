"""PromptCanvas HTTP API and event handlers.

Routes only: each one hands the request to a service in ``chalicelib.services``.
Auth, CORS and JSON errors are applied by ``chalicelib.http.Api``. Each route and handler
imports its services when it runs, so a cold process loads only what its first request
needs (with SnapStart, :func:`chalicelib.snapstart.before_snapshot` loads them all first).
"""

from __future__ import annotations

from chalice import Chalice, Rate, Response

from chalicelib import observability, snapstart
from chalicelib.http import Api, RequestContext
from chalicelib.services import meta
from chalicelib.settings import get_settings
from chalicelib.sweeps import time_budget

app = Chalice(app_name="promptcanvas")
api = Api(app)
snapstart.register()  # SnapStart: fresh random state, connections and credentials after a restore


@api.route("/health", methods=["GET"], auth=False)
def get_health(ctx: RequestContext):
    """Liveness and dependency checks (no auth)."""
    from chalicelib.services import health

    return health.check()


@api.route("/v1/openapi.json", methods=["GET"])
def get_openapi(ctx: RequestContext):
    """The OpenAPI 3.1 document of this API."""
    return meta.openapi()


@api.route("/v1/models", methods=["GET"])
def get_models(ctx: RequestContext):
    """The model catalog."""
    return meta.models()


@api.route("/v1/me", methods=["GET"])
def get_me(ctx: RequestContext):
    """The caller as the session token says, and whether they are an admin here."""
    who = ctx.principal
    return meta.me(who.user_id, who.org_id, who.org_role, who.is_admin)


@api.route("/v1/limits", methods=["GET"])
def get_limits(ctx: RequestContext):
    """The input limits of this deployment (jobs, prompts, archives, request bodies)."""
    return meta.limits()


@api.route("/v1/images", methods=["POST"], rate_limit=False)  # counted with the quota, in one write
def create_images(ctx: RequestContext):
    """Generate images from a prompt."""
    from chalicelib.services import images

    generated = images.generate(ctx.principal.user_id, ctx.json)
    return 201, generated.body, {"Server-Timing": f"flux;dur={generated.flux_ms:.1f}"}


@api.route("/v1/images", methods=["GET"])
def list_images(ctx: RequestContext):
    """The caller's images, newest first."""
    from chalicelib.services import images

    return images.list_images(ctx.principal.user_id, ctx.query)


@api.route("/v1/images/{image_id}", methods=["GET"])
def get_image(ctx: RequestContext):
    """One of the caller's images."""
    from chalicelib.services import images

    return images.get_image(ctx.principal.user_id, ctx.params["image_id"])


@api.route("/v1/images/{image_id}", methods=["DELETE"])
def delete_image(ctx: RequestContext):
    """Delete one of the caller's images (objects and metadata)."""
    from chalicelib.services import images, shares

    deleted = images.delete_image(ctx.principal.user_id, ctx.params["image_id"])
    shares.revoke_for_deleted_image(ctx.principal.user_id, deleted.image_id, deleted.collection)
    return 204, None


@api.route("/v1/videos", methods=["POST"])
def create_video(ctx: RequestContext):
    """Make a video (text-to-video, or from the caller's images); rendered asynchronously."""
    from chalicelib.services import videos

    video = videos.create(ctx.principal.user_id, ctx.json())
    return 202, video, {"Location": f"/v1/videos/{video['video_id']}"}


@api.route("/v1/videos", methods=["GET"])
def list_videos(ctx: RequestContext):
    """The caller's videos, newest first."""
    from chalicelib.services import videos

    return videos.list_videos(ctx.principal.user_id, ctx.query)


@api.route("/v1/videos/models", methods=["GET"])
def get_video_models(ctx: RequestContext):
    """The video models and what each takes (sizes, durations, fps, keyframes, price)."""
    from chalicelib.services import videos

    return videos.models()


@api.route("/v1/videos/{video_id}", methods=["GET"])
def get_video(ctx: RequestContext):
    """One of the caller's videos (status while rendering; file and poster URLs once stored)."""
    from chalicelib.services import videos

    return videos.get_video(ctx.principal.user_id, ctx.params["video_id"])


@api.route("/v1/videos/{video_id}", methods=["DELETE"])
def delete_video(ctx: RequestContext):
    """Delete one of the caller's videos (objects and metadata)."""
    from chalicelib.services import shares, videos

    videos.delete_video(ctx.principal.user_id, ctx.params["video_id"])
    shares.revoke_for(ctx.principal.user_id, shares.TARGET_VIDEO, ctx.params["video_id"])
    return 204, None


@api.route("/v1/images/{image_id}/shares", methods=["POST"])
def share_image(ctx: RequestContext):
    """A public link to one of the caller's images ({"expires_in_s"?})."""
    from chalicelib.services import shares

    body = ctx.json() if ctx.request.raw_body else {}
    return 201, shares.create_for_image(ctx.principal.user_id, ctx.params["image_id"], body, ctx.base_url)


@api.route("/v1/videos/{video_id}/shares", methods=["POST"])
def share_video(ctx: RequestContext):
    """A public link to one of the caller's finished videos ({"expires_in_s"?})."""
    from chalicelib.services import shares

    body = ctx.json() if ctx.request.raw_body else {}
    return 201, shares.create_for_video(ctx.principal.user_id, ctx.params["video_id"], body, ctx.base_url)


@api.route("/v1/collections/{name}/shares", methods=["POST"])
def share_collection(ctx: RequestContext):
    """A public link to one of the caller's collections ({"expires_in_s"?})."""
    from chalicelib.services import shares

    body = ctx.json() if ctx.request.raw_body else {}
    return 201, shares.create_for_collection(ctx.principal.user_id, ctx.params["name"], body, ctx.base_url)


@api.route("/v1/shares", methods=["GET"])
def list_shares(ctx: RequestContext):
    """The caller's live share links with view counts, newest first."""
    from chalicelib.services import shares

    return shares.list_shares(ctx.principal.user_id, ctx.query, ctx.base_url)


@api.route("/v1/shares/{share_id}", methods=["DELETE"])
def revoke_share(ctx: RequestContext):
    """Revoke one of the caller's share links at once."""
    from chalicelib.services import shares

    shares.revoke(ctx.principal.user_id, ctx.params["share_id"])
    return 204, None


@api.route("/s/{code}", methods=["GET"], auth=False)
def view_share(ctx: RequestContext):
    """The public page of a share link (HTML; 404 and 429 are HTML too)."""
    from chalicelib.services import share_pages

    status, html, headers = share_pages.page(ctx.params["code"], ctx.source_ip)
    return Response(body=html, status_code=status, headers=headers)


@api.route("/v1/prompts/recent", methods=["GET"])
def get_recent_prompts(ctx: RequestContext):
    """The caller's recent prompts."""
    from chalicelib.services import images

    return images.recent_prompts(ctx.principal.user_id)


@api.route("/v1/me/usage", methods=["GET"])
def get_usage(ctx: RequestContext):
    """The caller's usage against the monthly quota."""
    from chalicelib.services import usage

    return usage.current(ctx.principal.user_id)


@api.route("/v1/me/together-key", methods=["PUT"])
def put_together_key(ctx: RequestContext):
    """Save the caller's own Together key ({"key"}) after checking it upstream; never echoed."""
    from chalicelib.services import together_keys

    return 200, together_keys.put_key(ctx.principal.user_id, ctx.json()), {"Cache-Control": "no-store"}


@api.route("/v1/me/together-key", methods=["GET"])
def get_together_key(ctx: RequestContext):
    """The caller's own Together key: id, last four characters, when verified, status."""
    from chalicelib.services import together_keys

    return 200, together_keys.key_json(ctx.principal.user_id), {"Cache-Control": "no-store"}


@api.route("/v1/me/together-key", methods=["DELETE"])
def delete_together_key(ctx: RequestContext):
    """Remove the caller's own Together key."""
    from chalicelib.services import together_keys

    together_keys.delete_key(ctx.principal.user_id)
    return 204, None


@api.route("/v1/estimates", methods=["POST"])
def create_estimate(ctx: RequestContext):
    """What a POST /v1/jobs (or /v1/images) body would cost upstream; nothing is generated."""
    from chalicelib.services import estimates

    return estimates.estimate(ctx.request.raw_body)


@api.route("/v1/admin/spend", methods=["GET"], admin=True)
def get_key_spend(ctx: RequestContext):
    """The month's upstream spend per key (admins only; key ids, never keys)."""
    return meta.key_spend()


@api.route("/v1/admin/keys", methods=["GET"], admin=True)
def get_key_health(ctx: RequestContext):
    """Per-key health of the Together key pool (admins only)."""
    return meta.key_health()


@api.route("/v1/admin/models", methods=["GET"], admin=True)
def get_model_status(ctx: RequestContext):
    """The model catalog against the upstream's own model list (admins only)."""
    return meta.model_status()


@app.schedule(Rate(1, unit=Rate.HOURS))
def check_model_catalog(event):
    """Hourly: compare the catalog with the upstream's GET /v1/models; unlisted models are refused."""
    from chalicelib.flux import availability

    return availability.check_upstream()


# --- scheduled sweeps ---
# Cleanup sweeps (chalicelib.services.cleanup) and gauges (chalicelib.services.gauges).
# Each sweep returns its report; the counts are also logged (JSON) and metered (EMF).
observability.configure(app)


def _cleanup_budget(event) -> float:
    """Seconds a cleanup sweep may run in this invocation."""
    return time_budget(get_settings().cleanup_time_budget_seconds, getattr(event, "context", None))


@app.schedule(Rate(1, unit=Rate.HOURS))
def cleanup_retention(event):
    """Hourly: images and uploads older than IMAGE_RETENTION_DAYS, ended videos older than
    VIDEO_RETENTION_DAYS, lose metadata and objects."""
    from chalicelib.services import cleanup, upload_cleanup

    images_report = cleanup.sweep_retention(budget_s=_cleanup_budget(event)).as_dict()
    uploads_report = upload_cleanup.sweep_upload_retention(budget_s=_cleanup_budget(event)).as_dict()
    videos_report = cleanup.sweep_video_retention(budget_s=_cleanup_budget(event)).as_dict()
    return [images_report, uploads_report, videos_report]


@app.schedule(Rate(1, unit=Rate.DAYS))
def cleanup_orphans(event):
    """Daily: objects older than 1 h without metadata, metadata without its object, stale pending uploads."""
    from chalicelib.services import cleanup_runs

    return [report.as_dict() for report in cleanup_runs.sweep_orphans(budget_s=_cleanup_budget(event))]


@app.schedule(Rate(15, unit=Rate.MINUTES))
def cleanup_stuck_videos(event):
    """Every 15 minutes: videos still running 15 min past their deadline (their message died) fail, refunded once."""
    from chalicelib.services import cleanup

    return cleanup.sweep_stuck_videos(budget_s=_cleanup_budget(event)).as_dict()


@app.schedule(Rate(1, unit=Rate.HOURS))
def cleanup_archives(event):
    """Hourly: ZIPs under archives/ older than 24 h."""
    from chalicelib.services import cleanup

    return cleanup.sweep_archives(budget_s=_cleanup_budget(event)).as_dict()


@app.schedule(Rate(1, unit=Rate.HOURS))
def cleanup_shares(event):
    """Hourly: share links past their expiry are deleted (DynamoDB TTL is the backstop)."""
    from chalicelib.services import cleanup

    return cleanup.sweep_shares(budget_s=_cleanup_budget(event)).as_dict()


@app.schedule(Rate(5, unit=Rate.MINUTES))
def emit_gauges(event):
    """Every 5 minutes: key-state and job-queue gauges as EMF metrics (the alarms' input)."""
    from chalicelib.services import gauges

    return gauges.collect()


# --- batch jobs ---
# Jobs, items, the jobs-queue worker, ZIP archives, webhooks, the recovery sweep.
# Prompt files arrive as multipart/form-data: API Gateway must pass the body through as
# binary; the route accepts JSON and multipart (anything else is a 415).
app.api.binary_types.append("multipart/form-data")


@api.route("/v1/jobs", methods=["POST"], content_types=["application/json", "multipart/form-data"])
def create_job(ctx: RequestContext):
    """Submit a batch job: JSON (prompts, or prompt + count) or a multipart prompt file."""
    from chalicelib.jobs import submit

    created = submit.submit(
        ctx.principal.user_id, ctx.header("content-type"), ctx.request.raw_body, ctx.header("idempotency-key")
    )
    headers = {"Location": f"/v1/jobs/{created.job_id}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return 202, created.body(), headers


@api.route("/v1/jobs", methods=["GET"])
def list_jobs(ctx: RequestContext):
    """The caller's jobs, newest first (?status=&collection=&limit=&cursor=)."""
    from chalicelib.jobs import views

    return views.list_jobs(ctx.principal.user_id, ctx.query)


@api.route("/v1/jobs/{job_id}", methods=["GET"])
def get_job(ctx: RequestContext):
    """One job: counters, progress, ETA, parameters, errors by reason."""
    from chalicelib.jobs import views

    return views.get_job(ctx.principal.user_id, ctx.params["job_id"])


@api.route("/v1/jobs/{job_id}/items", methods=["GET"])
def list_job_items(ctx: RequestContext):
    """A job's items in prompt order (?status=&limit=&cursor=)."""
    from chalicelib.jobs import views

    return views.list_items(ctx.principal.user_id, ctx.params["job_id"], ctx.query)


@api.route("/v1/jobs/{job_id}/cancel", methods=["POST"])
def cancel_job(ctx: RequestContext):
    """Cancel a job: once this returns, no further item of it starts."""
    from chalicelib.jobs import control

    return control.cancel_job(ctx.principal.user_id, ctx.params["job_id"])


@api.route("/v1/jobs/{job_id}/retry", methods=["POST"])
def retry_job(ctx: RequestContext):
    """Re-enqueue a job's failed items."""
    from chalicelib.jobs import control

    return 202, control.retry_job(ctx.principal.user_id, ctx.params["job_id"])


def _archive_reply(archive: dict) -> tuple[int, dict]:
    """201 with a ready archive, 202 while it is queued or building (or failed)."""
    return (201 if archive["status"] == "ready" else 202), archive


@api.route("/v1/jobs/{job_id}/archive", methods=["POST"])
def archive_job(ctx: RequestContext):
    """A ZIP of the job's images, plain or as an ImageFolder dataset (201 ready, or 202 building)."""
    from chalicelib.services import archives

    body = ctx.json() if ctx.request.raw_body else {}
    return _archive_reply(archives.create_for_job(ctx.principal.user_id, ctx.params["job_id"], body))


@api.route("/v1/collections", methods=["GET"])
def list_collections(ctx: RequestContext):
    """The caller's collections with image counts."""
    from chalicelib.services import images

    return images.list_collections(ctx.principal.user_id)


@api.route("/v1/collections/{name}/archive", methods=["POST"])
def archive_collection(ctx: RequestContext):
    """A ZIP of a collection's images, plain or as an ImageFolder dataset (201 ready, or 202 building)."""
    from chalicelib.services import archives

    body = ctx.json() if ctx.request.raw_body else {}
    return _archive_reply(archives.create_for_collection(ctx.principal.user_id, ctx.params["name"], body))


@api.route("/v1/archives", methods=["POST"])
def create_archive(ctx: RequestContext):
    """A ZIP of the given images ({"image_ids": [...]}, at most 500)."""
    from chalicelib.services import archives

    return _archive_reply(archives.create_for_images(ctx.principal.user_id, ctx.json()))


@api.route("/v1/archives/{archive_id}", methods=["GET"])
def get_archive(ctx: RequestContext):
    """An archive's status, and its presigned URL once ready."""
    from chalicelib.services import archives

    return archives.get_archive(ctx.principal.user_id, ctx.params["archive_id"])


@api.route("/v1/me/webhook-secret", methods=["GET"])
def get_webhook_secret(ctx: RequestContext):
    """The caller's Standard Webhooks signing secret (created on first use)."""
    from chalicelib.services import webhook_secrets

    return 200, webhook_secrets.secret_json(ctx.principal.user_id), {"Cache-Control": "no-store"}


@api.route("/v1/me/webhook-secret/rotate", methods=["POST"])
def rotate_webhook_secret(ctx: RequestContext):
    """Replace the caller's webhook signing secret; returns the new one."""
    from chalicelib.services import webhook_secrets

    return 200, webhook_secrets.rotate_json(ctx.principal.user_id), {"Cache-Control": "no-store"}


@app.on_sqs_message(
    queue=get_settings().jobs_queue_name,
    batch_size=get_settings().worker_batch_size,
    maximum_concurrency=get_settings().worker_max_concurrency,
)
def process_jobs_queue(event):
    """The jobs-queue worker: items and archives; answers a partial batch response."""
    from chalicelib.jobs import worker

    return worker.handle_event(event.to_dict(), event.context)


@app.on_sqs_message(
    queue=get_settings().webhooks_queue_name,
    batch_size=get_settings().webhook_worker_batch_size,
    maximum_concurrency=get_settings().webhook_worker_max_concurrency,
)
def process_webhooks_queue(event):
    """The webhook worker (its own function and queue): bounded deliveries; partial batch response."""
    from chalicelib.services import webhook_queue

    return webhook_queue.handle_event(event.to_dict(), event.context)


@app.schedule(Rate(5, unit=Rate.MINUTES))
def sweep_stuck_jobs(event):
    """Every 5 minutes: expired leases, DLQ messages, unfinished jobs; enqueues due webhooks."""
    from chalicelib.jobs import recovery

    budget = time_budget(get_settings().sweep_time_budget_seconds, getattr(event, "context", None))
    return recovery.sweep(budget_s=budget).as_dict()


# --- uploads (images in) ---
# The client POSTs the file straight to S3 (a presigned POST); S3 notifies the uploads
# queue and its worker verifies the object (chalicelib.services.upload_worker).


@api.route("/v1/uploads", methods=["POST"])
def create_upload(ctx: RequestContext):
    """Announce an image or ZIP upload; answers the presigned POST to send it to S3."""
    from chalicelib.services import uploads

    return 201, uploads.create(ctx.principal.user_id, ctx.json())


@api.route("/v1/uploads", methods=["GET"])
def list_uploads(ctx: RequestContext):
    """The caller's uploads, newest first (?collection=&limit=&cursor=)."""
    from chalicelib.services import uploads

    return uploads.list_uploads(ctx.principal.user_id, ctx.query)


@api.route("/v1/uploads/{upload_id}", methods=["GET"])
def get_upload(ctx: RequestContext):
    """One upload: status, size, URLs once verified, the reason when rejected, a ZIP's files."""
    from chalicelib.services import uploads

    return uploads.get_upload(ctx.principal.user_id, ctx.params["upload_id"])


@api.route("/v1/uploads/{upload_id}", methods=["DELETE"])
def delete_upload(ctx: RequestContext):
    """Delete one of the caller's uploads (item, quota bytes, objects)."""
    from chalicelib.services import uploads

    uploads.delete_upload(ctx.principal.user_id, ctx.params["upload_id"])
    return 204, None


@app.on_sqs_message(
    queue=get_settings().uploads_queue_name,
    batch_size=get_settings().uploads_batch_size,
    maximum_concurrency=get_settings().uploads_max_concurrency,
)
def process_uploads_queue(event):
    """The uploads-queue worker: S3 ObjectCreated events → verified uploads (partial batch response)."""
    from chalicelib.services import upload_queue

    return upload_queue.handle_event(event.to_dict(), event.context)
