"""Authentication modes. Each turns a request into the ``AstrocyteContext`` the core acts for."""

from __future__ import annotations

import re
from typing import Protocol

from astrocyte.errors import ValidationError
from astrocyte.types import AstrocyteContext
from starlette.requests import Request

from astrocyte_gateway.settings import Settings

PRINCIPAL_HEADER = "x-astrocyte-principal"
_PRINCIPAL = re.compile(r"^(user|agent|service):[A-Za-z0-9._:@\-]{1,255}$")


class Authenticator(Protocol):
    """Resolve the caller, or raise ``UnauthenticatedError`` / ``AccessDeniedError``."""

    async def authenticate(self, request: Request) -> AstrocyteContext: ...

    async def close(self) -> None: ...


def checked_principal(value: str, where: str) -> str:
    """A principal named by a client must look like ``user:<id>``, ``agent:<id>`` or ``service:<id>``."""
    if not _PRINCIPAL.match(value):
        raise ValidationError(
            f"{where} must look like user:<id>, agent:<id> or service:<id>", code="principal_invalid"
        )
    return value


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator for ``settings.auth_mode`` (settings are already validated)."""
    if settings.auth_mode == "api_key":
        from astrocyte_gateway.auth.api_key import ApiKeyAuthenticator

        return ApiKeyAuthenticator(settings.api_keys)
    if settings.auth_mode == "jwt":
        from astrocyte_gateway.auth.jwt import JwtAuthenticator

        return JwtAuthenticator(settings.jwt)
    from astrocyte_gateway.auth.dev import DevAuthenticator

    return DevAuthenticator()
