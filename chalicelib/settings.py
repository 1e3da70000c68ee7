"""One place that reads configuration from the environment.

Every setting the application uses is read here, once per process, into an
immutable :class:`Settings`. Nothing else in ``chalicelib`` reads ``os.environ``
(boto3 and PynamoDB read ``AWS_ENDPOINT_URL`` / ``AWS_DEFAULT_REGION`` themselves).

The variable names are the contract documented in the README's config table.

Example::

    from chalicelib.settings import get_settings
    s = get_settings()
    s.images_bucket   # "promptcanvas-images"
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _csv(value: str | None) -> tuple[str, ...]:
    """Split a comma-separated value into stripped, non-empty parts."""
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    return float(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Application configuration, read from environment variables.

    Units are in the field names' comments. See README "Configuration".
    """

    # Together AI / Flux
    together_api_keys: tuple[str, ...] = ()
    together_base_url: str = "https://api.together.xyz/v1"
    together_keys_secret_id: str | None = None
    flux_deadline_seconds: float = 25.0  # whole call, under API Gateway's 29 s
    flux_request_timeout_seconds: float = 20.0  # one upstream HTTP attempt
    flux_default_cooldown_seconds: float = 10.0  # 429 without Retry-After
    key_health_refresh_seconds: float = 5.0  # how stale the shared key-health snapshot may be
    default_model: str = "black-forest-labs/FLUX.1-schnell"  # model of requests that name none
    model_availability_refresh_seconds: float = 60.0  # how stale the shared model-availability snapshot may be

    # Clerk
    clerk_jwt_key: str | None = None  # PEM public key
    clerk_jwks_url: str | None = None
    clerk_issuer: str | None = None
    clerk_authorized_parties: tuple[str, ...] = ()
    clerk_admin_roles: tuple[str, ...] = ("org:admin", "admin")  # roles that count within the admin org
    clerk_admin_org_id: str | None = None  # the one organization whose admins are our admins
    clerk_admin_user_ids: tuple[str, ...] = ()  # Clerk user ids (sub) that are admins anywhere
    jwks_cache_seconds: float = 300.0
    jwks_fetch_timeout_seconds: float = 3.0  # the wall-clock deadline of one JWKS fetch

    # HTTP
    cors_allowed_origins: tuple[str, ...] = ()  # also the origins cookie-authenticated writes may come from
    health_cache_seconds: float = 30.0  # how long one /health dependency check answers every hit

    # AWS resources
    table_prefix: str = "promptcanvas-"
    images_bucket: str = "promptcanvas-images"
    jobs_queue_name: str = "promptcanvas-jobs"
    jobs_dlq_name: str = "promptcanvas-jobs-dlq"
    presign_expires_seconds: int = 900

    # Scheduled cleanup: retention, orphan and archive sweeps (chalicelib.services.cleanup)
    image_retention_days: int = 0  # days an image is kept; 0 keeps images forever
    video_retention_days: int = 0  # days a video is kept; 0 keeps videos forever (unset: IMAGE_RETENTION_DAYS)
    cleanup_dry_run: bool = False  # log what the cleanup sweeps would delete, delete nothing
    cleanup_time_budget_seconds: float = 240.0  # one cleanup sweep run, capped below the Lambda's remaining time
    lambda_function_name: str | None = None  # set by the Lambda runtime; None locally and in tests

    # Limits
    monthly_image_quota: int = 1000  # images per user per calendar month (UTC)
    monthly_budget_usd: float = 0.0  # USD of shared-key generation per user per calendar month (UTC); 0 = off
    rate_limit_per_minute: int = 60  # generation requests per user per minute
    mutation_rate_limit_per_minute: int = 120  # POST/PUT/PATCH/DELETE /v1 requests per user per minute
    max_body_bytes: int = 64 * 1024

    # Batch jobs: worker, leases, archives, webhooks, stuck-work sweep
    worker_batch_size: int = 10  # SQS records per worker invocation (1-10)
    worker_max_concurrency: int = 4  # concurrent worker invocations (SQS MaximumConcurrency, >= 2)
    worker_threads: int = 10  # records processed in parallel inside one invocation
    video_deadline_seconds: int = 3600  # a video that is not stored by then fails ("deadline")
    video_poll_min_seconds: int = 2  # first poll after a submit; doubles per poll up to the max
    video_poll_max_seconds: int = 60  # the longest wait between two polls of one video
    item_lease_seconds: int = 120  # a running item's lease; must exceed one item's processing time
    max_item_attempts: int = 3  # leases that reached the upstream, per item and retry round
    jobs_max_items: int = 1000  # images per job (every job kind)
    jobs_max_body_bytes: int = 2 * 1024 * 1024  # POST /v1/jobs body (JSON or multipart)
    jobs_max_receive_count: int = 5  # the jobs queue's redrive maxReceiveCount
    archive_max_images: int = 1000  # images per ZIP (a whole job's)
    archive_inline_max_images: int = 20  # ZIPs up to this size are built in the request
    archive_part_bytes: int = 8 * 1024 * 1024  # multipart part size (S3 minimum 5 MiB)
    webhook_max_attempts: int = 8  # deliveries per job finish
    webhook_timeout_seconds: float = 5.0  # one delivery's whole exchange (connect + TLS + send + read), wall clock
    webhook_max_response_bytes: int = 4096  # bytes of a receiver's answer read (status, headers, body)
    webhooks_queue_name: str = "promptcanvas-webhooks"  # deliveries' own queue (never the jobs queue)
    webhook_worker_batch_size: int = 5  # SQS records per webhook-worker invocation (1-10)
    webhook_worker_max_concurrency: int = 2  # concurrent webhook-worker invocations (SQS MaximumConcurrency, >= 2)
    webhook_user_rate_limit: int = 20  # deliveries per user per rate window; more are deferred
    webhook_rate_window_seconds: int = 60  # the per-user delivery rate window
    webhook_secret_kms_key_id: str = "alias/promptcanvas-webhook-secrets"  # KMS key wrapping signing secrets
    allow_loopback_webhooks: bool = False  # dev stack only: http(s)://127.0.0.1 / localhost
    sweep_time_budget_seconds: float = 50.0  # one stuck-work sweep run
    sweep_dry_run: bool = False  # log what the sweep would do, change nothing

    # Uploads (images in): presigned POST, verification worker, ZIP unpacking, storage quota
    uploads_queue_name: str = "promptcanvas-uploads"
    uploads_dlq_name: str = "promptcanvas-uploads-dlq"
    uploads_batch_size: int = 5  # S3 event records per uploads-worker invocation
    uploads_max_concurrency: int = 2  # concurrent uploads-worker invocations (>= 2)
    upload_max_bytes: int = 20 * 1024 * 1024  # one image upload (and one ZIP member), bytes
    upload_max_pixels: int = 40_000_000  # width * height of one image (decompression bombs)
    upload_post_expires_seconds: int = 600  # lifetime of a presigned POST
    upload_quota_bytes: int = 1024 * 1024 * 1024  # stored upload bytes per user
    zip_max_bytes: int = 500 * 1024 * 1024  # one ZIP upload, bytes
    zip_max_members: int = 1000  # files in one ZIP
    zip_max_ratio: int = 100  # uncompressed / compressed size of one member
    zip_max_total_bytes: int = 2 * 1024 * 1024 * 1024  # uncompressed bytes of all members
    zip_slice_seconds: float = 60.0  # a ZIP is unpacked in slices this long, then re-queued (fairness)
    # Share links: public /s/{code} pages (chalicelib.services.shares)
    share_base_url: str | None = None  # origin of share URLs, e.g. https://app.example.com; None: the request's
    share_default_lifetime_seconds: int = 7 * 24 * 3600  # a link's lifetime when expires_in_s is left out
    share_max_lifetime_seconds: int = 90 * 24 * 3600  # the longest expires_in_s accepted
    share_presign_expires_seconds: int = 300  # presigned image URLs on a share page
    share_views_per_ip_per_minute: int = 60  # /s/ hits per client IP per minute (0: no limit)
    share_views_per_code_per_minute: int = 300  # /s/ hits per code per minute (0: no limit)
    share_collection_max_images: int = 60  # images on one collection page (newest first)

    @property
    def jwks_url(self) -> str | None:
        """``CLERK_JWKS_URL``, else ``{CLERK_ISSUER}/.well-known/jwks.json``."""
        if self.clerk_jwks_url:
            return self.clerk_jwks_url
        if self.clerk_issuer:
            return self.clerk_issuer.rstrip("/") + "/.well-known/jwks.json"
        return None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``).

        Raises:
            ValueError: a numeric variable does not parse.
        """
        env = dict(os.environ if env is None else env)
        defaults = cls()
        return cls(
            together_api_keys=_csv(env.get("TOGETHER_API_KEYS")),
            together_base_url=env.get("TOGETHER_BASE_URL") or defaults.together_base_url,
            together_keys_secret_id=env.get("TOGETHER_KEYS_SECRET_ID") or None,
            flux_deadline_seconds=_float(env, "FLUX_DEADLINE_SECONDS", defaults.flux_deadline_seconds),
            flux_request_timeout_seconds=_float(
                env, "FLUX_REQUEST_TIMEOUT_SECONDS", defaults.flux_request_timeout_seconds
            ),
            flux_default_cooldown_seconds=_float(
                env, "FLUX_DEFAULT_COOLDOWN_SECONDS", defaults.flux_default_cooldown_seconds
            ),
            key_health_refresh_seconds=_float(env, "KEY_HEALTH_REFRESH_SECONDS", defaults.key_health_refresh_seconds),
            default_model=(env.get("DEFAULT_MODEL") or "").strip() or defaults.default_model,
            model_availability_refresh_seconds=_float(
                env, "MODEL_AVAILABILITY_REFRESH_SECONDS", defaults.model_availability_refresh_seconds
            ),
            clerk_jwt_key=(env.get("CLERK_JWT_KEY") or "").replace("\\n", "\n") or None,
            clerk_jwks_url=env.get("CLERK_JWKS_URL") or None,
            clerk_issuer=env.get("CLERK_ISSUER") or None,
            clerk_authorized_parties=_csv(env.get("CLERK_AUTHORIZED_PARTIES")),
            clerk_admin_roles=_csv(env.get("CLERK_ADMIN_ROLES")) or defaults.clerk_admin_roles,
            clerk_admin_org_id=(env.get("CLERK_ADMIN_ORG_ID") or "").strip() or None,
            clerk_admin_user_ids=_csv(env.get("CLERK_ADMIN_USER_IDS")),
            jwks_cache_seconds=_float(env, "JWKS_CACHE_SECONDS", defaults.jwks_cache_seconds),
            jwks_fetch_timeout_seconds=_float(env, "JWKS_FETCH_TIMEOUT_SECONDS", defaults.jwks_fetch_timeout_seconds),
            cors_allowed_origins=_csv(env.get("CORS_ALLOWED_ORIGINS")),
            health_cache_seconds=max(0.0, _float(env, "HEALTH_CACHE_SECONDS", defaults.health_cache_seconds)),
            table_prefix=env.get("TABLE_PREFIX") or defaults.table_prefix,
            images_bucket=env.get("IMAGES_BUCKET") or defaults.images_bucket,
            jobs_queue_name=env.get("JOBS_QUEUE_NAME") or defaults.jobs_queue_name,
            jobs_dlq_name=env.get("JOBS_DLQ_NAME") or defaults.jobs_dlq_name,
            presign_expires_seconds=_int(env, "PRESIGN_EXPIRES_SECONDS", defaults.presign_expires_seconds),
            image_retention_days=max(0, _int(env, "IMAGE_RETENTION_DAYS", defaults.image_retention_days)),
            video_retention_days=max(  # unset: IMAGE_RETENTION_DAYS
                0, _int(env, "VIDEO_RETENTION_DAYS", _int(env, "IMAGE_RETENTION_DAYS", defaults.image_retention_days))
            ),
            cleanup_dry_run=(env.get("CLEANUP_DRY_RUN") or "").strip().lower() in ("1", "true", "yes"),
            cleanup_time_budget_seconds=_float(
                env, "CLEANUP_TIME_BUDGET_SECONDS", defaults.cleanup_time_budget_seconds
            ),
            lambda_function_name=env.get("AWS_LAMBDA_FUNCTION_NAME") or None,
            monthly_image_quota=_int(env, "MONTHLY_IMAGE_QUOTA", defaults.monthly_image_quota),
            monthly_budget_usd=max(0.0, _float(env, "MONTHLY_BUDGET_USD", defaults.monthly_budget_usd)),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", defaults.rate_limit_per_minute),
            mutation_rate_limit_per_minute=_int(
                env, "MUTATION_RATE_LIMIT_PER_MINUTE", defaults.mutation_rate_limit_per_minute
            ),
            worker_batch_size=_int(env, "WORKER_BATCH_SIZE", defaults.worker_batch_size),
            worker_max_concurrency=_int(env, "WORKER_MAX_CONCURRENCY", defaults.worker_max_concurrency),
            worker_threads=_int(env, "WORKER_THREADS", defaults.worker_threads),
            video_deadline_seconds=_int(env, "VIDEO_DEADLINE_SECONDS", defaults.video_deadline_seconds),
            video_poll_min_seconds=_int(env, "VIDEO_POLL_MIN_SECONDS", defaults.video_poll_min_seconds),
            video_poll_max_seconds=_int(env, "VIDEO_POLL_MAX_SECONDS", defaults.video_poll_max_seconds),
            item_lease_seconds=_int(env, "ITEM_LEASE_SECONDS", defaults.item_lease_seconds),
            max_item_attempts=_int(env, "MAX_ITEM_ATTEMPTS", defaults.max_item_attempts),
            jobs_max_items=_int(env, "JOBS_MAX_ITEMS", defaults.jobs_max_items),
            jobs_max_body_bytes=_int(env, "JOBS_MAX_BODY_BYTES", defaults.jobs_max_body_bytes),
            jobs_max_receive_count=_int(env, "JOBS_MAX_RECEIVE_COUNT", defaults.jobs_max_receive_count),
            archive_max_images=_int(env, "ARCHIVE_MAX_IMAGES", defaults.archive_max_images),
            archive_inline_max_images=_int(env, "ARCHIVE_INLINE_MAX_IMAGES", defaults.archive_inline_max_images),
            archive_part_bytes=max(5 * 1024 * 1024, _int(env, "ARCHIVE_PART_BYTES", defaults.archive_part_bytes)),
            webhook_max_attempts=_int(env, "WEBHOOK_MAX_ATTEMPTS", defaults.webhook_max_attempts),
            webhook_timeout_seconds=_float(env, "WEBHOOK_TIMEOUT_SECONDS", defaults.webhook_timeout_seconds),
            webhook_max_response_bytes=max(
                256, _int(env, "WEBHOOK_MAX_RESPONSE_BYTES", defaults.webhook_max_response_bytes)
            ),
            webhooks_queue_name=env.get("WEBHOOKS_QUEUE_NAME") or defaults.webhooks_queue_name,
            webhook_worker_batch_size=max(
                1, min(10, _int(env, "WEBHOOK_WORKER_BATCH_SIZE", defaults.webhook_worker_batch_size))
            ),
            webhook_worker_max_concurrency=max(
                2, _int(env, "WEBHOOK_WORKER_MAX_CONCURRENCY", defaults.webhook_worker_max_concurrency)
            ),
            webhook_user_rate_limit=max(1, _int(env, "WEBHOOK_USER_RATE_LIMIT", defaults.webhook_user_rate_limit)),
            webhook_rate_window_seconds=max(
                1, _int(env, "WEBHOOK_RATE_WINDOW_SECONDS", defaults.webhook_rate_window_seconds)
            ),
            webhook_secret_kms_key_id=env.get("WEBHOOK_SECRET_KMS_KEY_ID") or defaults.webhook_secret_kms_key_id,
            allow_loopback_webhooks=(env.get("ALLOW_LOOPBACK_WEBHOOKS") or "").strip().lower() in ("1", "true", "yes"),
            sweep_time_budget_seconds=_float(env, "SWEEP_TIME_BUDGET_SECONDS", defaults.sweep_time_budget_seconds),
            sweep_dry_run=(env.get("SWEEP_DRY_RUN") or "").strip().lower() in ("1", "true", "yes"),
            uploads_queue_name=env.get("UPLOADS_QUEUE_NAME") or defaults.uploads_queue_name,
            uploads_dlq_name=env.get("UPLOADS_DLQ_NAME") or defaults.uploads_dlq_name,
            uploads_batch_size=_int(env, "UPLOADS_BATCH_SIZE", defaults.uploads_batch_size),
            uploads_max_concurrency=_int(env, "UPLOADS_MAX_CONCURRENCY", defaults.uploads_max_concurrency),
            upload_max_bytes=_int(env, "UPLOAD_MAX_BYTES", defaults.upload_max_bytes),
            upload_max_pixels=_int(env, "UPLOAD_MAX_PIXELS", defaults.upload_max_pixels),
            upload_post_expires_seconds=_int(env, "UPLOAD_POST_EXPIRES_SECONDS", defaults.upload_post_expires_seconds),
            upload_quota_bytes=_int(env, "UPLOAD_QUOTA_BYTES", defaults.upload_quota_bytes),
            zip_max_bytes=_int(env, "ZIP_MAX_BYTES", defaults.zip_max_bytes),
            zip_max_members=_int(env, "ZIP_MAX_MEMBERS", defaults.zip_max_members),
            zip_max_ratio=_int(env, "ZIP_MAX_RATIO", defaults.zip_max_ratio),
            zip_max_total_bytes=_int(env, "ZIP_MAX_TOTAL_BYTES", defaults.zip_max_total_bytes),
            zip_slice_seconds=_float(env, "ZIP_SLICE_SECONDS", defaults.zip_slice_seconds),
            share_base_url=(env.get("SHARE_BASE_URL") or "").strip().rstrip("/") or None,
            share_default_lifetime_seconds=max(
                1, _int(env, "SHARE_DEFAULT_LIFETIME_SECONDS", defaults.share_default_lifetime_seconds)
            ),
            share_max_lifetime_seconds=max(
                1, _int(env, "SHARE_MAX_LIFETIME_SECONDS", defaults.share_max_lifetime_seconds)
            ),
            share_presign_expires_seconds=max(
                1, _int(env, "SHARE_PRESIGN_EXPIRES_SECONDS", defaults.share_presign_expires_seconds)
            ),
            share_views_per_ip_per_minute=max(
                0, _int(env, "SHARE_VIEWS_PER_IP_PER_MINUTE", defaults.share_views_per_ip_per_minute)
            ),
            share_views_per_code_per_minute=max(
                0, _int(env, "SHARE_VIEWS_PER_CODE_PER_MINUTE", defaults.share_views_per_code_per_minute)
            ),
            share_collection_max_images=max(
                1, _int(env, "SHARE_COLLECTION_MAX_IMAGES", defaults.share_collection_max_images)
            ),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (a warm Lambda keeps them).

    Tests that change the environment call ``get_settings.cache_clear()``.
    """
    return Settings.from_env()
