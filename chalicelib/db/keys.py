"""Shared health of the Together API keys (the key pool), one item per key id."""

from __future__ import annotations

from pynamodb.attributes import MapAttribute, NumberAttribute, UnicodeAttribute

from chalicelib.db.base import BaseModel, table_name


class KeyHealthModel(BaseModel):
    """Health of one key in the pool, shared by every Lambda instance.

    Hash ``key_id`` (a sha256 prefix; the key itself is never stored).
    ``state`` is ``healthy`` | ``cooling`` | ``disabled`` | ``out_of_credits``.
    ``cooldown_until`` is epoch seconds. ``pace`` is the key's pacing as one instance last
    shared it: ``{model: {"next_at": epoch s, "interval": s}}`` (see chalicelib.flux.pacing).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("keys")

    key_id = UnicodeAttribute(hash_key=True)
    state = UnicodeAttribute(default="healthy")
    cooldown_until = NumberAttribute(default=0)
    last_error = UnicodeAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    requests = NumberAttribute(default=0)
    successes = NumberAttribute(default=0)
    rate_limited = NumberAttribute(default=0)
    errors = NumberAttribute(default=0)
    updated_at = NumberAttribute(default=0)  # epoch seconds
    pace = MapAttribute(null=True)  # {model: {"next_at", "interval"}}
