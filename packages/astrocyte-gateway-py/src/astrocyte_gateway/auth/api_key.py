"""``api_key`` mode: ``X-API-Key`` (or ``Authorization: Bearer``) maps to a configured principal.

A key marked ``trusted_service`` may name the end user it calls for with ``X-Astrocyte-Principal``
(the core then checks both principals' grants). From any other key that header is refused: identity
is never taken from a header nobody verified.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from astrocyte.errors import AccessDeniedError, UnauthenticatedError
from astrocyte.types import AstrocyteContext
from starlette.requests import Request

from astrocyte_gateway.auth import PRINCIPAL_HEADER, checked_principal
from astrocyte_gateway.settings import ApiKey


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key``, else from an ``Authorization: Bearer`` header."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class ApiKeyAuthenticator:
    def __init__(self, keys: Mapping[str, ApiKey]) -> None:
        # Looked up by digest, then compared in constant time: no early-exit string compare on secrets.
        self._keys = {_digest(k.encode()): (k.encode(), entry) for k, entry in keys.items()}

    async def authenticate(self, request: Request) -> AstrocyteContext:
        raw = presented_key(request)
        if not raw:
            raise UnauthenticatedError(
                "missing API key: send it as X-API-Key or Authorization: Bearer", code="api_key_missing"
            )
        presented = raw.encode()
        found = self._keys.get(_digest(presented))
        if found is None or not hmac.compare_digest(found[0], presented):
            raise UnauthenticatedError("invalid API key", code="api_key_invalid")
        entry = found[1]
        named = request.headers.get(PRINCIPAL_HEADER)
        if named is None:
            return AstrocyteContext(principal=entry.principal)
        if not entry.trusted_service:
            raise AccessDeniedError(
                "X-Astrocyte-Principal is accepted only from API keys marked trusted_service",
                code="principal_header_not_allowed",
            )
        return AstrocyteContext(
            principal=entry.principal, acting_for=checked_principal(named, "X-Astrocyte-Principal")
        )

    async def close(self) -> None:
        return None
