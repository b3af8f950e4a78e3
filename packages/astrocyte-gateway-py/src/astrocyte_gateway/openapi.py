"""The OpenAPI document: security schemes, and the error responses every operation can return.

FastAPI's default 422 is replaced by the gateway's 400 (validation errors are 400 here), and each
operation lists the errors of the shared ``{"detail", "code", "request_id"}`` shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from astrocyte_gateway.schemas import ErrorResponse

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_COMMON_ERRORS = {
    "400": "Invalid request (code names the problem)",
    "413": "Request body over ASTROCYTE_MAX_REQUEST_BODY_BYTES",
    "429": "Rate limited; see Retry-After",
    "500": "Unexpected error",
    "503": "A dependency is unavailable",
}
_AUTH_ERRORS = {
    "401": "Missing or invalid credentials",
    "403": "Not allowed",
    "404": "No such bank or memory",
}
_SECURITY_SCHEMES = {
    "ApiKeyAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "ASTROCYTE_AUTH_MODE=api_key",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "ASTROCYTE_AUTH_MODE=jwt",
    },
    "AdminToken": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Admin-Token",
        "description": "ASTROCYTE_ADMIN_TOKEN",
    },
}
_PUBLIC_PREFIXES = ("/live", "/health", "/metrics", "/v1/ingest/webhook/")


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON body of ``model`` for a route that parses its
    body itself (see :func:`astrocyte_gateway.deps.read_body`)."""
    _BODY_MODELS[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


_BODY_MODELS: dict[str, type[BaseModel]] = {}


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the decorated, cached schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the gateway's body models, error shape and security schemes."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: list[type[BaseModel]] = [ErrorResponse, *_BODY_MODELS.values()]
    for model in models:
        described = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(described.pop("$defs", {}))
        schemas[model.__name__] = described
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = _SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            _decorate(path, operation)
    return schema


def _decorate(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    errors = dict(_COMMON_ERRORS)
    if path.startswith("/v1/admin/"):
        operation["security"] = [{"AdminToken": []}]
        errors.update({"401": "X-Admin-Token missing", "403": "Wrong admin token, or admin disabled"})
    elif path.startswith("/v1/ingest/webhook/"):
        operation["security"] = []
        errors.update({"401": "Bad or replayed signature", "404": "No such webhook source"})
    elif path.startswith(_PUBLIC_PREFIXES):
        operation["security"] = []
    else:
        operation["security"] = [{"ApiKeyAuth": []}, {"BearerAuth": []}]
        errors.update(_AUTH_ERRORS)
    for status, description in errors.items():
        responses.setdefault(
            status, {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}
        )
