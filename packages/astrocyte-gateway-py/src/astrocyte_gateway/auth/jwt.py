"""``jwt`` mode: a bearer token verified with HS256 (shared secret) or RS/ES/PS256 (JWKS / OIDC).

``exp``, ``iss`` and ``aud`` are required and enforced. The accepted algorithms are fixed by
configuration and never taken from the token: ``alg: none`` is refused, and so is a token whose
algorithm does not match the key type it names (algorithm confusion).
"""

from __future__ import annotations

from typing import Any

import jwt
from astrocyte.errors import UnauthenticatedError
from astrocyte.types import AstrocyteContext
from starlette.requests import Request

from astrocyte_gateway.auth.jwks import JwksClient
from astrocyte_gateway.settings import JwtSettings

_KEY_TYPES = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC"}


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError(
            "missing bearer token: send Authorization: Bearer <jwt>", code="jwt_missing"
        )
    return token.strip()


class JwtAuthenticator:
    def __init__(self, settings: JwtSettings, jwks: JwksClient | None = None) -> None:
        self._settings = settings
        self._hmac = settings.algorithms == ("HS256",)
        self._jwks = None if self._hmac else (jwks or JwksClient(settings))

    async def authenticate(self, request: Request) -> AstrocyteContext:
        claims = await self.verify(bearer_token(request))
        return AstrocyteContext(principal=self._principal(claims))

    async def verify(self, token: str) -> dict[str, Any]:
        """Verified claims of ``token``; raises ``UnauthenticatedError`` with a specific code."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise UnauthenticatedError("malformed token", code="jwt_invalid") from None
        alg = header.get("alg")
        if alg not in self._settings.algorithms:
            raise UnauthenticatedError(
                f"token algorithm {alg!r} is not accepted", code="jwt_algorithm_refused"
            )
        key = await self._key(header, alg)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("token expired", code="jwt_expired") from None
        except jwt.InvalidAudienceError:
            raise UnauthenticatedError(
                "token audience is not accepted", code="jwt_audience_invalid"
            ) from None
        except jwt.InvalidIssuerError:
            raise UnauthenticatedError("token issuer is not accepted", code="jwt_issuer_invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise UnauthenticatedError(
                f"token lacks the {exc.claim!r} claim", code="jwt_claim_missing"
            ) from None
        except jwt.InvalidTokenError:
            raise UnauthenticatedError("token signature or claims are invalid", code="jwt_invalid") from None

    async def _key(self, header: dict[str, Any], alg: str) -> Any:
        if self._jwks is None:
            return self._settings.secret
        jwk = await self._jwks.key(header.get("kid"))
        declared = jwk._jwk_data.get("alg")
        if jwk.key_type != _KEY_TYPES[alg] or (declared and declared != alg):
            raise UnauthenticatedError("token algorithm does not match its key", code="jwt_algorithm_refused")
        return jwk.key

    def _principal(self, claims: dict[str, Any]) -> str:
        """The principal is the prefix plus the claim, whatever the claim says (a subject spelled
        ``service:chat`` is ``user:service:chat``); a service principal only through
        ``ASTROCYTE_JWT_SERVICES``, which the operator writes."""
        services = self._settings.services
        if services:
            bound = claims.get(self._settings.service_claim)
            if isinstance(bound, str) and bound in services:
                return services[bound]
        value = claims.get(self._settings.principal_claim)
        if not isinstance(value, str) or not value:
            raise UnauthenticatedError(
                f"token lacks the {self._settings.principal_claim!r} claim used as principal",
                code="jwt_claim_missing",
            )
        return f"{self._settings.principal_prefix}{value}"

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()
