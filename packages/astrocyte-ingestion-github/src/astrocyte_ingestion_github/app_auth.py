"""GitHub App installation tokens: a JWT signed with the App's key buys an hour-long token.

GitHub documents the flow: a JWT (RS256, ``iss`` = the App id, ``iat`` backdated 60 s against
clock drift, ``exp`` at most 10 minutes ahead) authenticates ``POST /app/installations/{id}/
access_tokens``, which answers ``201 {"token", "expires_at", ...}``. The token is renewed five
minutes before ``expires_at``, or at once after GitHub answered 401 to it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx

from astrocyte_ingestion_github.config import AppAuth

RENEW_BEFORE_SECONDS = 300.0


class InstallationTokens:
    """Mints and caches the installation token of one GitHub App installation."""

    def __init__(self, auth: AppAuth, api_url: str) -> None:
        self._auth = auth
        self._url = f"{api_url.rstrip('/')}/app/installations/{auth.installation_id}/access_tokens"
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def app_jwt(self) -> str:
        import jwt  # the `app` extra

        now = int(time.time())
        claims = {"iat": now - 60, "exp": now + 540, "iss": str(self._auth.app_id)}
        return str(jwt.encode(claims, self._auth.pem(), algorithm="RS256"))

    async def token(self, http: httpx.AsyncClient) -> str:
        async with self._lock:
            if self._token is None or time.time() > self._expires - RENEW_BEFORE_SECONDS:
                await self._mint(http)
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """GitHub refused the token (revoked, or the installation's permissions changed)."""
        self._token = None

    async def _mint(self, http: httpx.AsyncClient) -> None:
        response = await http.post(self._url, headers={"Authorization": f"Bearer {self.app_jwt()}"})
        if response.status_code != 201:
            from astrocyte_ingestion_github.client import GitHubError

            raise GitHubError(response.status_code, "could not create a GitHub App installation token")
        body = response.json()
        self._token = str(body["token"])
        self._expires = datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00")).timestamp()
