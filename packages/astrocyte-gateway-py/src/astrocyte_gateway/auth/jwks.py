"""An async, cached, rotation-aware JWKS client.

Keys are fetched with httpx (never blocking the event loop), cached for ``jwks_cache_seconds``, and
refetched when a token names an unknown ``kid`` (a key rotation), at most once per cooldown so a
flood of bogus kids cannot hammer the identity provider. When the JWKS cannot be fetched the token is
refused: an unverifiable token is never accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from astrocyte.errors import ProviderUnavailableError, UnauthenticatedError
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from astrocyte_gateway.settings import JwtSettings

log = logging.getLogger("astrocyte_gateway.auth.jwks")


class JwksClient:
    def __init__(self, settings: JwtSettings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._http = http or httpx.AsyncClient(timeout=settings.jwks_timeout_seconds, follow_redirects=False)
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_attempt = float("-inf")
        self._jwks_url = settings.jwks_url
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> PyJWK:
        """The key for ``kid``; raises when it is unknown even after a (rate-limited) refetch."""
        now = time.monotonic()
        if self._fetched_at is None or now - self._fetched_at > self._settings.jwks_cache_seconds:
            await self._refresh(force=True)
        found = self._keys.get(kid)
        if (
            found is None
            and time.monotonic() - self._last_attempt >= self._settings.jwks_refetch_cooldown_seconds
        ):
            await self._refresh(force=False)
            found = self._keys.get(kid)
        if found is None:
            raise UnauthenticatedError("token signed with an unknown key id", code="jwt_unknown_kid")
        return found

    async def _refresh(self, force: bool) -> None:
        attempt = time.monotonic()
        async with self._lock:
            if self._last_attempt > attempt:  # another task refreshed while we waited
                if self._fetched_at is None:
                    raise _unavailable()
                return
            self._last_attempt = time.monotonic()
            try:
                document = await self._fetch_jwks()
            except (httpx.HTTPError, ValueError) as exc:
                # A failed refresh drops the cache: keys we can no longer confirm are not trusted.
                self._keys, self._fetched_at = {}, None
                log.warning("JWKS fetch failed: %s", type(exc).__name__)
                raise _unavailable() from None
            self._keys = _parse_keys(document)
            self._fetched_at = time.monotonic()

    async def _fetch_jwks(self) -> dict[str, Any]:
        if self._jwks_url is None:
            discovery = await self._get_json(self._settings.oidc_discovery_url or "")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError("OIDC discovery document has no jwks_uri")
            self._jwks_url = jwks_uri
        return await self._get_json(self._jwks_url)

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._http.get(url, headers={"accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("expected a JSON object")
        return document

    async def close(self) -> None:
        await self._http.aclose()


def _parse_keys(document: dict[str, Any]) -> dict[str | None, PyJWK]:
    keys: dict[str | None, PyJWK] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry.get("kid")] = PyJWK(entry)
        except PyJWKError:
            continue  # an algorithm or key type we do not support: skip it, do not fail the set
    return keys


def _unavailable() -> ProviderUnavailableError:
    return ProviderUnavailableError(
        "cannot fetch the signing keys (JWKS) to verify the token; request refused", code="jwks_unavailable"
    )
