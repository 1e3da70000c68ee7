"""Text-to-image through Together AI's FLUX models.

* :mod:`~chalicelib.flux.catalog`: models, presets, request validation.
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

from chalicelib.flux.catalog import (
    ASPECT_RATIOS,
    DEFAULT_MODEL,
    GENERATION_FIELDS,
    MODELS,
    GenerationParams,
    ModelSpec,
    catalog_json,
    get_model,
    parse_generation_params,
)
from chalicelib.flux.client import FluxClient, GeneratedImage, get_flux_client, reset_flux_client
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    CorruptImageError,
    FluxError,
    KeyHealthUnavailableError,
    NoUsableKeysError,
    UpstreamBusyError,
    UpstreamFailedError,
    UpstreamRejectedError,
)
from chalicelib.flux.keypool import KeyPool, Lease, get_key_pool, key_id, reset_key_pool

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_MODEL",
    "GENERATION_FIELDS",
    "MODELS",
    "AllKeysCoolingError",
    "CorruptImageError",
    "FluxClient",
    "FluxError",
    "GeneratedImage",
    "GenerationParams",
    "KeyHealthUnavailableError",
    "KeyPool",
    "Lease",
    "ModelSpec",
    "NoUsableKeysError",
    "UpstreamBusyError",
    "UpstreamFailedError",
    "UpstreamRejectedError",
    "catalog_json",
    "get_flux_client",
    "get_key_pool",
    "get_model",
    "key_id",
    "parse_generation_params",
    "reset_flux_client",
    "reset_key_pool",
]
