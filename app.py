"""PromptCanvas HTTP API and event handlers.

Routes only: each one hands the request to a service in ``chalicelib.services``.
Auth, CORS and JSON errors are applied by ``chalicelib.http.Api``.
"""

from __future__ import annotations

from chalice import Chalice

from chalicelib.http import Api, RequestContext
from chalicelib.services import health, images, meta, usage

app = Chalice(app_name="promptcanvas")
api = Api(app)


@api.route("/health", methods=["GET"], auth=False)
def get_health(ctx: RequestContext):
    """Liveness and dependency checks (no auth)."""
    return health.check()


@api.route("/v1/openapi.json", methods=["GET"])
def get_openapi(ctx: RequestContext):
    """The OpenAPI 3.1 document of this API."""
    return meta.openapi()


@api.route("/v1/models", methods=["GET"])
def get_models(ctx: RequestContext):
    """The model catalog."""
    return meta.models()


@api.route("/v1/images", methods=["POST"])
def create_images(ctx: RequestContext):
    """Generate images from a prompt."""
    return 201, images.generate(ctx.principal.user_id, ctx.json())


@api.route("/v1/images", methods=["GET"])
def list_images(ctx: RequestContext):
    """The caller's images, newest first."""
    return images.list_images(ctx.principal.user_id, ctx.query)


@api.route("/v1/images/{image_id}", methods=["GET"])
def get_image(ctx: RequestContext):
    """One of the caller's images."""
    return images.get_image(ctx.principal.user_id, ctx.params["image_id"])


@api.route("/v1/images/{image_id}", methods=["DELETE"])
def delete_image(ctx: RequestContext):
    """Delete one of the caller's images (objects and metadata)."""
    images.delete_image(ctx.principal.user_id, ctx.params["image_id"])
    return 204, None


@api.route("/v1/prompts/recent", methods=["GET"])
def get_recent_prompts(ctx: RequestContext):
    """The caller's recent prompts."""
    return images.recent_prompts(ctx.principal.user_id)


@api.route("/v1/me/usage", methods=["GET"])
def get_usage(ctx: RequestContext):
    """The caller's usage against the monthly quota."""
    return usage.current(ctx.principal.user_id)


@api.route("/v1/admin/keys", methods=["GET"], admin=True)
def get_key_health(ctx: RequestContext):
    """Per-key health of the Together key pool (admins only)."""
    return meta.key_health()
