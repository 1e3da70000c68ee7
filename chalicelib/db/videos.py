"""Video metadata: one item per video, from the request to the stored file.

The item is the video's state machine (``chalicelib.services.video_worker``): ``queued`` →
``submitting`` (a worker holds the submit claim) → ``rendering`` (``upstream_id`` recorded)
→ ``completed`` (file and poster stored) or ``failed`` (with a reason).
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.db.base import BaseModel, table_name


class VideosByCollection(GlobalSecondaryIndex):
    """GSI ``by_collection``: hash ``user_collection`` (``"{user_id}#{collection}"``), range ``video_id``."""

    class Meta:
        index_name = "by_collection"
        projection = AllProjection()

    user_collection = UnicodeAttribute(hash_key=True)
    video_id = UnicodeAttribute(range_key=True)


class VideoModel(BaseModel):
    """One video. Hash ``user_id``, range ``video_id`` (a ULID: newest first descending).

    ``params`` is the validated request (:meth:`VideoParams.to_record`, JSON). The file lives
    at ``s3_key`` and the poster (when there is one) at ``poster_key`` in the images bucket.
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("videos")

    user_id = UnicodeAttribute(hash_key=True)
    video_id = UnicodeAttribute(range_key=True)
    status = UnicodeAttribute()  # queued | submitting | rendering | completed | failed
    params = UnicodeAttribute()  # JSON of VideoParams
    prompt = UnicodeAttribute(null=True)
    model = UnicodeAttribute()
    collection = UnicodeAttribute(null=True)
    user_collection = UnicodeAttribute(null=True)
    first_key = UnicodeAttribute(null=True)  # S3 key of the first keyframe (the caller's image)
    last_key = UnicodeAttribute(null=True)  # S3 key of the last keyframe
    reference_keys = UnicodeAttribute(null=True)  # JSON list of S3 keys of reference images
    upstream_id = UnicodeAttribute(null=True)  # Together's job id, written once
    key_id = UnicodeAttribute(null=True)  # sha256 prefix of the key that submitted, never the key
    claim = UnicodeAttribute(null=True)  # token of the worker holding the submit claim
    claimed_at = NumberAttribute(null=True)  # epoch seconds the submit claim was taken
    submit_attempts = NumberAttribute(default=0)
    polls = NumberAttribute(default=0)
    deadline_at = NumberAttribute()  # epoch seconds; past it the video fails ("deadline")
    estimated_cost_usd = NumberAttribute()
    cost_usd = NumberAttribute(null=True)  # what Together reported (outputs.cost), USD
    quota_period = UnicodeAttribute(null=True)  # the month charged ("YYYY-MM")
    error_code = UnicodeAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    s3_key = UnicodeAttribute(null=True)
    poster_key = UnicodeAttribute(null=True)
    bytes = NumberAttribute(null=True)  # size of the stored file in bytes
    content_type = UnicodeAttribute(null=True)
    job_id = UnicodeAttribute(null=True)  # the batch job the video is an item of (None: POST /v1/videos)
    item_id = UnicodeAttribute(null=True)  # that job's item
    created_at = UTCDateTimeAttribute()
    completed_at = UTCDateTimeAttribute(null=True)

    by_collection = VideosByCollection()
