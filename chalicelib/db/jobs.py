"""Batch jobs, their items, idempotency keys and ZIP archives.

Tables (all PAY_PER_REQUEST, names ``{TABLE_PREFIX}{name}``):

- ``jobs``: :class:`JobModel`, hash ``user_id``, range ``job_id`` (a ULID, so a
  descending query lists newest first). Sparse GSI ``by_active`` (hash
  ``active_shard``, range ``job_id``) holds only jobs the stuck-work sweep must
  look at: unfinished jobs and finished jobs whose webhook is still pending.
- ``job_items``: :class:`JobItemModel`, hash ``job_id``, range ``item_id``
  (the 0-based index, zero-padded to 4 digits, so items list in prompt order).
- ``idempotency``: :class:`IdempotencyModel`, hash ``user_id``, range ``key``
  (the ``Idempotency-Key`` header, or ``"archive {sha256}"`` for the archive selection
  claims), expiring through TTL.
- ``archives``: :class:`ArchiveModel`, hash ``user_id``, range ``archive_id`` (ULID).

Times are epoch seconds (floats) unless the attribute is a ``UTCDateTimeAttribute``.
The state machines that move these items live in ``chalicelib.jobs.state``
(jobs and items) and ``chalicelib.services.archives`` (archives).
"""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.db.base import BaseModel, table_name

#: The value of ``JobModel.active_shard`` while a job is in the ``by_active`` index.
ACTIVE_SHARD = "active"

# Item states (the item state machine; see chalicelib.jobs.state).
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
ITEM_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)

# Job statuses, derived from the counters (see chalicelib.jobs.state.derive_status).
JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_COMPLETED = "completed"
JOB_COMPLETED_WITH_ERRORS = "completed_with_errors"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_PAUSED = "paused"  # the user's own key was refused or is out of credits; resumed by retry
JOB_STATUSES = (
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_PAUSED,
    JOB_COMPLETED,
    JOB_COMPLETED_WITH_ERRORS,
    JOB_FAILED,
    JOB_CANCELLED,
)
FINISHED_JOB_STATUSES = (JOB_COMPLETED, JOB_COMPLETED_WITH_ERRORS, JOB_FAILED, JOB_CANCELLED)


class JobsByActive(GlobalSecondaryIndex):
    """Sparse GSI ``by_active``: hash ``active_shard`` (always :data:`ACTIVE_SHARD`), range ``job_id``.

    Only jobs with ``active_shard`` set appear, so the sweep reads just the few
    jobs that are in flight (or owe a webhook), never the whole table.
    """

    class Meta:
        index_name = "by_active"
        projection = AllProjection()

    active_shard = UnicodeAttribute(hash_key=True)
    job_id = UnicodeAttribute(range_key=True)


class JobModel(BaseModel):
    """One batch job.

    Counters (``queued_count`` .. ``failed_count``) change only by atomic
    UpdateItem ADD, each transition moving 1 from one counter to another in one
    request, so they always sum to ``total``. ``status`` is derived from them and
    stored for the ``?status=`` list filter.

    Attributes (units): ``params`` the job's generation parameters without
    ``prompt``/``seed``/``n`` (JSON object); ``failure_reasons`` ``{reason: count}``;
    ``started_at``/``finished_at``/``cancelled_at``/``counters_at`` epoch seconds;
    ``progress_base`` items finished when the job (re)started and ``progress_since``
    when, for the ETA;
    ``webhook_*`` the delivery state: ``webhook_state`` none | pending | delivered | failed,
    ``webhook_next_at`` epoch seconds of the next due attempt.
    ``key_source`` ``shared`` (the platform's key pool; quota and budget charged) or ``own``
    (the user's own Together key at submission; nothing charged); ``estimated_usd`` the
    estimate at submission, ``actual_usd`` the cost of the images stored so far (USD);
    ``paused_reason``/``paused_code``/``paused_at`` why its own key stopped it (None: not paused).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("jobs")

    user_id = UnicodeAttribute(hash_key=True)
    job_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute(null=True)
    collection = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default=JOB_QUEUED)
    source = UnicodeAttribute(default="prompts")  # prompts | count | file | image_ids | collection_images | sets
    params = JSONAttribute(default=dict)
    total = NumberAttribute(default=0)
    queued_count = NumberAttribute(default=0)
    running_count = NumberAttribute(default=0)
    succeeded_count = NumberAttribute(default=0)
    failed_count = NumberAttribute(default=0)
    failure_reasons = MapAttribute(default=dict)
    cancelled = BooleanAttribute(default=False)
    created_at = NumberAttribute()
    enqueued_at = NumberAttribute(null=True)
    started_at = NumberAttribute(null=True)
    finished_at = NumberAttribute(null=True)
    cancelled_at = NumberAttribute(null=True)
    counters_at = NumberAttribute(null=True)
    progress_base = NumberAttribute(default=0)
    progress_since = NumberAttribute(null=True)
    finish_seq = NumberAttribute(default=0)
    idempotency_key = UnicodeAttribute(null=True)
    webhook_url = UnicodeAttribute(null=True)
    webhook_state = UnicodeAttribute(default="none")
    webhook_attempts = NumberAttribute(default=0)
    webhook_next_at = NumberAttribute(null=True)
    webhook_last_error = UnicodeAttribute(null=True)
    webhook_delivered_at = NumberAttribute(null=True)
    active_shard = UnicodeAttribute(null=True)
    key_source = UnicodeAttribute(null=True)  # shared | own (None: before own keys, shared)
    estimated_usd = NumberAttribute(null=True)
    actual_usd = NumberAttribute(null=True)
    paused_code = UnicodeAttribute(null=True)
    paused_reason = UnicodeAttribute(null=True)
    paused_at = NumberAttribute(null=True)
    kind = UnicodeAttribute(null=True)  # image | video (None: image)
    resumed_at = NumberAttribute(null=True)  # epoch seconds of the last resume (a later pause must begin after it)

    by_active = JobsByActive()


class JobItemModel(BaseModel):
    """One image of a job: the unit of work, idempotent under at-least-once delivery.

    ``status`` queued | running | succeeded | failed. A lease (``lease_token``,
    ``lease_until`` epoch seconds) is taken by a conditional write; ``attempts``
    counts leases that reached the upstream. ``image_id`` is fixed at creation so
    every attempt stores under the same id (at most one image per item).
    ``cancel_requested`` is set on a running item when its job is cancelled.
    ``charged_period`` is the quota month its image was charged to (a refund goes there).
    ``inputs`` the item's image inputs, ``{"image": {"id", "source"}?, "references":
    [{"id", "source"}], "mask": {...}?}`` (``source`` ``upload`` | ``image``), or None for
    text-to-image; the worker resolves them to fresh presigned URLs when it runs.
    ``key_source`` ``shared`` | ``own`` as on its job (an ``own`` item is never charged nor
    refunded); ``estimated_usd`` its share of the job's estimate (released from the budget
    if it does not end stored).
    ``kind`` ``video`` for an item of a video job (None: an image): its result is the
    video whose id is ``image_id`` (one id per item, whatever it makes).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("job_items")

    job_id = UnicodeAttribute(hash_key=True)
    item_id = UnicodeAttribute(range_key=True)
    user_id = UnicodeAttribute()
    index = NumberAttribute()
    prompt = UnicodeAttribute()
    seed = NumberAttribute()
    params = JSONAttribute(default=dict)
    collection = UnicodeAttribute(null=True)
    image_id = UnicodeAttribute()
    status = UnicodeAttribute(default=QUEUED)
    attempts = NumberAttribute(default=0)
    lease_token = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    cancel_requested = BooleanAttribute(null=True)
    error_code = UnicodeAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    retry_round = NumberAttribute(default=0)  # 0 at submit, +1 for each retry of the item
    charged_period = UnicodeAttribute(null=True)  # quota month ("YYYY-MM") its image was charged to
    inputs = JSONAttribute(null=True)  # image inputs by id (see the class docstring)
    key_source = UnicodeAttribute(null=True)  # shared | own (None: shared)
    kind = UnicodeAttribute(null=True)  # video (None: image)
    estimated_usd = NumberAttribute(null=True)
    created_at = NumberAttribute()
    enqueued_at = NumberAttribute(null=True)
    started_at = NumberAttribute(null=True)
    finished_at = NumberAttribute(null=True)


class IdempotencyModel(BaseModel):
    """A claimed ``Idempotency-Key`` of ``POST /v1/jobs``: hash ``user_id``, range ``key``.

    ``request_hash`` is the sha256 of the normalised request; ``job_id`` the job it
    made (or is making); ``charged`` whether the quota was charged for it, and
    ``charged_period`` the quota month (``"YYYY-MM"``) it was charged to;
    ``claimed_at`` epoch seconds; ``expires_at`` TTL (24 h).

    The same table holds the claims that dedupe archive requests: range key
    ``"archive {selection}"`` (the space cannot occur in an ``Idempotency-Key`` header,
    so the two never collide), ``request_hash`` the selection hash and ``job_id`` the id
    of the archive that builds it (see ``chalicelib.services.archives``).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("idempotency")

    user_id = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    request_hash = UnicodeAttribute()
    job_id = UnicodeAttribute()
    charged = BooleanAttribute(default=False)
    charged_period = UnicodeAttribute(null=True)
    claimed_at = NumberAttribute()
    expires_at = TTLAttribute(null=True)


class ArchiveModel(BaseModel):
    """A ZIP of some of a user's images, built in S3 at ``archives/{user_id}/{archive_id}.zip``.

    ``status`` queued | building | ready | failed; ``image_ids`` in archive order;
    ``source`` ``job`` | ``collection`` | ``images`` with ``source_ref`` (job id or
    collection name); ``bytes`` the ZIP size; ``lease_until`` epoch seconds while building;
    ``selection`` the sha256 of source, reference and image ids (identical requests share
    it); ``enqueued_at`` epoch seconds when its queue message was sent (None: not yet);
    ``format`` ``zip`` | ``imagefolder`` (None: ``zip``, records written before formats).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("archives")

    user_id = UnicodeAttribute(hash_key=True)
    archive_id = UnicodeAttribute(range_key=True)
    status = UnicodeAttribute(default="queued")
    source = UnicodeAttribute()
    source_ref = UnicodeAttribute(null=True)
    image_ids = ListAttribute(of=UnicodeAttribute, default=list)
    s3_key = UnicodeAttribute()
    bytes = NumberAttribute(null=True)
    image_count = NumberAttribute(default=0)
    attempts = NumberAttribute(default=0)
    lease_until = NumberAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    selection = UnicodeAttribute(null=True)
    enqueued_at = NumberAttribute(null=True)
    format = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    finished_at = NumberAttribute(null=True)
    expires_at = TTLAttribute(null=True)
