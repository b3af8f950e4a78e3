"""A small GitHub REST client: conditional GETs, ``Link`` pagination and GitHub's rate limits.

What GitHub documents, and what this client does about it:

- **Primary limit**: every response carries ``x-ratelimit-remaining`` and ``x-ratelimit-reset``
  (UTC epoch seconds). When remaining reaches 0 no request is sent before the reset time (plus a
  second); a 403/429 answered with remaining 0 waits the same way.
- **Secondary limits**: a 403/429 whose body says "secondary rate limit" (or any 403/429 with
  ``retry-after``) waits ``retry-after`` seconds when given, else at least a minute, growing
  exponentially while it repeats.
- **Conditional requests**: ``If-None-Match`` with the ETag of the last answer for the same URL; a
  304 costs no quota (for authorised requests) and returns no body.
- **5xx and network errors** are retried with exponential backoff; the caller sees
  :class:`TransportDown` (health: degraded) after each failed attempt, so it can report it.
- 401 (bad credentials) and 403/404 that are not rate limits raise :class:`GitHubError` with
  the status: permanent for this request.
- 301/302/307 redirects (a renamed repository, a transferred issue) are followed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from astrocyte_ingestion_github.app_auth import InstallationTokens

log = logging.getLogger("astrocyte_ingestion_github")

API_VERSION = "2022-11-28"
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="([^"]+)"')
_RATE_LIMITED = frozenset({403, 429})


class GitHubError(Exception):
    """A response that retrying will not fix (bad token, no access, not found, gone)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"GitHub answered {status}: {message}")
        self.status = status


class TransportDown(Exception):
    """GitHub could not be reached or answered 5xx; the client backs off and tries again."""


@dataclass(slots=True)
class Page:
    """One answer: ``items`` (None for 304 Not Modified), the ETag and the ``next`` page URL."""

    status: int
    items: list[Any] | None
    etag: str | None
    next_url: str | None


@dataclass(slots=True)
class RateLimit:
    """What the last response said about the primary limit."""

    remaining: int | None = None
    reset_at: float | None = None  # UTC epoch seconds
    blocked_until: float = 0.0  # epoch seconds before which no request is sent
    secondary_streak: int = 0
    waits: list[float] = field(default_factory=list)  # for health and tests: each wait taken


def parse_links(header: str | None) -> dict[str, str]:
    """``Link: <url>; rel="next", <url>; rel="last"`` as ``{"next": url, "last": url}``."""
    return {rel: url for url, rel in _LINK.findall(header or "")}


class GitHubClient:
    """GETs against one GitHub API base URL with a token; one per driver."""

    def __init__(
        self,
        api_url: str,
        token: str | None,
        *,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        user_agent: str = "astrocyte-ingestion-github",
        max_wait: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_down: Callable[[str], None] | None = None,
        app_tokens: InstallationTokens | None = None,
    ) -> None:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": user_agent,
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self.api_url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout, verify=verify, follow_redirects=True)
        self.limit = RateLimit()
        self.requests = 0
        self._max_wait = max_wait
        self._sleep = sleep
        self._on_down = on_down
        self._app_tokens = app_tokens

    async def close(self) -> None:
        await self._http.aclose()

    async def get_page(
        self, url: str, params: Mapping[str, str] | None = None, etag: str | None = None
    ) -> Page:
        """GET until an answer that is not a limit or a transient failure; waits as GitHub asks."""
        backoff = 1.0
        while True:
            await self._wait_for_quota()
            try:
                response = await self._send(url, params, etag)
            except httpx.TransportError as exc:
                backoff = await self._down(f"network: {type(exc).__name__}", backoff)
                continue
            self._note_limits(response)
            if response.status_code >= 500:
                backoff = await self._down(f"GitHub answered {response.status_code}", backoff)
                continue
            if response.status_code in _RATE_LIMITED and self._is_rate_limit(response):
                await self._wait_rate_limited(response)
                continue
            self.limit.secondary_streak = 0
            return self._page(response)

    async def _send(self, url: str, params: Mapping[str, str] | None, etag: str | None) -> httpx.Response:
        headers = {"If-None-Match": etag} if etag else {}
        if self._app_tokens is not None:
            headers["Authorization"] = f"Bearer {await self._app_tokens.token(self._http)}"
        target = url if url.startswith(("http://", "https://")) else self.api_url + url
        self.requests += 1
        response = await self._http.get(target, params=params, headers=headers)
        if response.status_code == 401 and self._app_tokens is not None:
            self._app_tokens.invalidate()  # the next request mints a fresh token
        return response

    def _page(self, response: httpx.Response) -> Page:
        etag = response.headers.get("etag")
        if response.status_code == 304:
            return Page(304, None, etag, None)
        if response.status_code >= 400:
            raise GitHubError(response.status_code, _message(response))
        try:
            items = response.json()
        except ValueError:
            raise TransportDown("GitHub answered a body that is not JSON") from None
        if not isinstance(items, list):
            raise GitHubError(response.status_code, "expected a JSON array")
        return Page(response.status_code, items, etag, parse_links(response.headers.get("link")).get("next"))

    def _note_limits(self, response: httpx.Response) -> None:
        remaining, reset = (
            response.headers.get("x-ratelimit-remaining"),
            response.headers.get("x-ratelimit-reset"),
        )
        if remaining is not None and remaining.isdigit():
            self.limit.remaining = int(remaining)
        if reset is not None and reset.isdigit():
            self.limit.reset_at = float(reset)
        if self.limit.remaining == 0 and self.limit.reset_at is not None:
            # GitHub: do not retry before x-ratelimit-reset; a second's margin for clock skew.
            self.limit.blocked_until = max(self.limit.blocked_until, self.limit.reset_at + 1.0)

    def _is_rate_limit(self, response: httpx.Response) -> bool:
        if response.status_code == 429 or "retry-after" in response.headers:
            return True
        if response.headers.get("x-ratelimit-remaining") == "0":
            return True
        message = _message(response).lower()
        return "rate limit" in message or "abuse" in message  # older secondary-limit wording

    async def _wait_rate_limited(self, response: httpx.Response) -> None:
        retry_after = response.headers.get("retry-after", "")
        now = time.time()
        if retry_after.isdigit():
            until = now + float(retry_after)
        elif response.headers.get("x-ratelimit-remaining") == "0" and self.limit.reset_at is not None:
            until = self.limit.reset_at + 1.0
        else:
            # GitHub: otherwise wait at least one minute, exponentially longer while it repeats.
            until = now + min(self._max_wait, 60.0 * 2.0 ** min(self.limit.secondary_streak, 10))
            self.limit.secondary_streak += 1
        log.warning(
            "GitHub rate limit (%s): waiting %.0fs",
            response.status_code,
            until - now,
            extra={"url": str(response.url)},
        )
        self.limit.blocked_until = max(self.limit.blocked_until, until)

    async def _wait_for_quota(self) -> None:
        wait = self.limit.blocked_until - time.time()
        if wait > 0:
            self.limit.waits.append(wait)
            await self._sleep(wait)

    async def _down(self, why: str, backoff: float) -> float:
        if self._on_down is not None:
            self._on_down(why)
        await self._sleep(backoff * random.uniform(0.8, 1.2))
        return min(self._max_wait, backoff * 2)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def retry_in(limit: RateLimit) -> float:
    """Seconds until a request may be sent (0 when now)."""
    return max(0.0, limit.blocked_until - time.time())


__all__ = ["GitHubClient", "GitHubError", "Page", "RateLimit", "TransportDown", "parse_links", "retry_in"]
