"""The shared result of checking the model catalog against the upstream's model list."""

from __future__ import annotations

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute

from chalicelib.db.base import BaseModel, table_name


class CatalogStatusModel(BaseModel):
    """The last upstream check of the catalog, shared by every Lambda instance.

    Hash ``name``: one item, ``"upstream"``. ``unavailable`` holds the ids of catalog
    models the upstream's ``GET /v1/models`` no longer lists (they are refused);
    ``upstream_models`` every image model id it listed; ``checked_at`` (epoch seconds)
    the last successful check; ``attempted_at`` / ``error`` the last attempt.
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("catalog")

    name = UnicodeAttribute(hash_key=True)
    unavailable = ListAttribute(of=UnicodeAttribute, default=list)
    upstream_models = ListAttribute(of=UnicodeAttribute, default=list)
    checked_at = NumberAttribute(default=0)  # epoch seconds of the last successful check
    attempted_at = NumberAttribute(default=0)  # epoch seconds of the last attempt
    error = UnicodeAttribute(null=True)  # why the last attempt failed (no key material)
