"""FastAPI dependencies: the caller's identity, the admin token, the open engine."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, TypeVar

import orjson
import pydantic
from astrocyte.errors import AccessDeniedError, ProviderUnavailableError, UnauthenticatedError
from astrocyte.types import AstrocyteContext
from astrocyte.validation import refuse_non_standard_json
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect

from astrocyte_gateway._asgi import header, scope_state
from astrocyte_gateway.runtime import GatewayRuntime

ADMIN_HEADER = "x-admin-token"
BodyT = TypeVar("BodyT", bound=pydantic.BaseModel)


def runtime_of(request: Request) -> GatewayRuntime:
    return request.app.state.gateway  # type: ignore[no-any-return]


def brain_of(request: Request) -> Any:
    return engine_of(runtime_of(request))


def engine_of(runtime: GatewayRuntime) -> Any:
    """The open ``Astrocyte``, or 503 ``engine_not_ready`` while the lifespan is still opening it."""
    brain = runtime.brain
    if brain is None:
        raise ProviderUnavailableError(
            "the memory engine is not open yet; retry shortly", code="engine_not_ready"
        )
    return brain


async def caller(request: Request) -> AstrocyteContext:
    """Authenticate the request and record the principal for the access log."""
    return await authenticate(request, runtime_of(request))


async def authenticate(request: Request, runtime: GatewayRuntime) -> AstrocyteContext:
    """:func:`caller` for a route that already holds the runtime."""
    context = await runtime.authenticator.authenticate(request)
    state = scope_state(request.scope)  # the dict behind request.state, without building a State
    state["principal"] = context.principal
    if context.acting_for:
        state["acting_for"] = context.acting_for
    return context


async def read_body(request: Request, model: type[BodyT]) -> BodyT:
    """Validate the JSON body against ``model`` natively; errors become the usual 400.

    The body is consumed here (read straight from ``receive``: Starlette's ``Request.body()`` runs an
    async generator per request, ~1 µs more), so only routes that read nothing else call this."""
    raw = await body_bytes(request)
    try:
        body = model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    refuse_non_standard_json(raw)  # NaN / Infinity would be stored as null
    return body


class OptionalHeader:
    """An optional request header that a route reads and validates itself (FastAPI's ``Header()``
    parameter would take the route off :class:`~astrocyte_gateway.direct_route.DirectRoute`):
    the same 400 on an invalid value, and the same OpenAPI parameter, from one pydantic declaration."""

    def __init__(self, name: str, max_length: int) -> None:
        self.name = name
        self._raw_name = name.lower().encode("latin-1")
        self._adapter: pydantic.TypeAdapter[str | None] = pydantic.TypeAdapter(
            Annotated[str | None, pydantic.Field(max_length=max_length, title=name)]
        )

    def openapi(self) -> dict[str, Any]:
        """The operation's ``parameters`` entry, as FastAPI writes it for ``Header()``."""
        return {"in": "header", "name": self.name, "required": False, "schema": self._adapter.json_schema()}

    def read(self, request: Request) -> str | None:
        raw = header(request.scope, self._raw_name)
        if raw is None:
            return None
        try:
            return self._adapter.validate_python(raw.decode("latin-1"))
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False)
            raise RequestValidationError([{**e, "loc": ("header", self.name)} for e in errors]) from None


async def body_bytes(request: Request) -> bytes:
    """The whole request body; ``ClientDisconnect`` when the client goes away first."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_admin(request: Request, *, bearer: bool = False) -> bool:
    """True when the request carries the right ``X-Admin-Token`` (compared in constant time);
    ``bearer``: also as ``Authorization: Bearer <token>`` (what a Prometheus scrape job sends)."""
    expected = runtime_of(request).settings.admin_token
    presented = request.headers.get(ADMIN_HEADER)
    if presented is None and bearer:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
    return bool(expected and presented and hmac.compare_digest(expected.encode(), presented.encode()))


async def require_admin(request: Request) -> None:
    """Guard for ``/v1/admin/*``: 403 when admin is disabled or the token is wrong, 401 when absent."""
    if not runtime_of(request).settings.admin_token:
        raise AccessDeniedError("admin routes are disabled: set ASTROCYTE_ADMIN_TOKEN", code="admin_disabled")
    if not request.headers.get(ADMIN_HEADER):
        raise UnauthenticatedError("admin routes need the X-Admin-Token header", code="admin_token_missing")
    if not is_admin(request):
        raise AccessDeniedError("wrong admin token", code="admin_token_invalid")
    request.state.principal = "admin"


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def json_response(payload: Any, status: int = 200) -> Response:
    """Serialise a core result (dataclasses, datetimes) or plain data in one native call.

    The output equals ``json.dumps(result.to_dict())`` (ISO 8601 datetimes, the dataclass field
    names), without walking every value in Python and without FastAPI's response-model
    re-validation: this is the hot path of every route."""
    return Response(orjson.dumps(payload, option=_JSON_OPTIONS), status, media_type="application/json")
