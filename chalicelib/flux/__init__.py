"""Text-to-image through Together AI's FLUX models.

* :mod:`~chalicelib.flux.catalog`: the model catalog (``models.json``), request validation, prices.
* :mod:`~chalicelib.flux.keypool`: API keys and their shared health (DynamoDB).
* :mod:`~chalicelib.flux.client`: the upstream calls, retries and image checks.
* :mod:`~chalicelib.flux.exceptions`: what can go wrong, as API errors.

Example::

    from chalicelib.flux import get_flux_client, parse_generation_params

    params = parse_generation_params({"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})
    images = get_flux_client().generate(params)
    images[0].data, images[0].seed, images[0].content_type
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.lazy import lazy_exports

if TYPE_CHECKING:
    from chalicelib.flux.catalog import (
        GENERATION_FIELDS,
        GenerationParams,
        ModelRetiredError,
        ModelSpec,
        catalog_json,
        default_model,
        get_model,
        image_cost,
        parse_generation_params,
    )
    from chalicelib.flux.client import FluxClient, GeneratedImage, get_flux_client, reset_flux_client
    from chalicelib.flux.exceptions import (
        AllKeysCoolingError,
        CorruptImageError,
        FailureKind,
        FluxError,
        KeyHealthUnavailableError,
        NoUsableKeysError,
        UpstreamBusyError,
        UpstreamFailedError,
        UpstreamRejectedError,
    )
    from chalicelib.flux.keypool import KeyLease, KeyPool, get_key_pool, key_id, reset_key_pool

#: Where each name of this package lives. Importing the package (as ``chalicelib.flux.catalog``
#: does) loads none of them: the client, the key pool and their DynamoDB models are imported
#: by the first use of one of their names (PEP 562 module ``__getattr__``), so a request
#: that only reads the catalog does not pay for them. (``chalicelib.flux.catalog`` is the
#: submodule; its ``catalog()`` is imported from there.)
_EXPORTS = {
    "catalog": (
        "GENERATION_FIELDS GenerationParams ModelRetiredError ModelSpec catalog_json default_model "
        "get_model image_cost parse_generation_params"
    ),
    "client": "FluxClient GeneratedImage get_flux_client reset_flux_client",
    "exceptions": (
        "AllKeysCoolingError CorruptImageError FailureKind FluxError KeyHealthUnavailableError "
        "NoUsableKeysError UpstreamBusyError UpstreamFailedError UpstreamRejectedError"
    ),
    "keypool": "KeyLease KeyPool get_key_pool key_id reset_key_pool",
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names.split()}

__getattr__, __dir__ = lazy_exports(__name__, _HOME)

__all__ = [
    "GENERATION_FIELDS",
    "AllKeysCoolingError",
    "CorruptImageError",
    "FailureKind",
    "FluxClient",
    "FluxError",
    "GeneratedImage",
    "GenerationParams",
    "KeyHealthUnavailableError",
    "KeyPool",
    "KeyLease",
    "ModelRetiredError",
    "ModelSpec",
    "NoUsableKeysError",
    "UpstreamBusyError",
    "UpstreamFailedError",
    "UpstreamRejectedError",
    "catalog_json",
    "default_model",
    "get_flux_client",
    "get_key_pool",
    "get_model",
    "image_cost",
    "key_id",
    "parse_generation_params",
    "reset_flux_client",
    "reset_key_pool",
]
