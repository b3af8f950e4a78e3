"""The HTTP client the ``openai`` embedder and LLM share: any OpenAI-compatible endpoint.

Conventions (the same for both providers):

* ``base_url`` includes the API version path, as the OpenAI SDK's does (``https://api.openai.com/v1``,
  ``http://localhost:11434/v1`` for Ollama, ``http://vllm:8000/v1``).
* ``api_key`` is secret: held as ``SecretStr``, sent as ``Authorization: Bearer`` (or raw in
  ``api_key_header``, e.g. ``api-key`` for Azure), never logged, never in a repr or error message.
* Retries with exponential backoff and jitter on 429, 5xx, timeouts and connection errors, at most
  ``max_retries`` times, honouring ``Retry-After`` (seconds or an HTTP date). A ``Retry-After`` longer
  than ``max_retry_after`` is not waited out: the call fails at once so the caller is not held.
* Errors: transient problems become ``ProviderUnavailableError`` (503); 401/403 become
  ``ConfigError(code="provider_auth_failed")`` (the key or deployment is wrong); any other 4xx becomes
  ``ValidationError(code="provider_rejected")`` with the server's own message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from astrocyte.errors import AstrocyteError, ConfigError, ProviderUnavailableError, ValidationError
from astrocyte.types import ComponentHealth

__all__ = ["OpenAIClientConfig", "OpenAIHTTPClient"]

logger = logging.getLogger("astrocyte.openai")


class OpenAIClientConfig(BaseModel):
    """Connection settings common to the ``openai`` embedder and LLM."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    model: str
    timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=20.0, ge=0)
    max_retry_after: float = Field(default=30.0, ge=0)
    api_key_header: str = "Authorization"
    extra_headers: dict[str, str] = Field(default_factory=dict)
    extra_query: dict[str, str] = Field(default_factory=dict)  # e.g. Azure's api-version


class OpenAIHTTPClient:
    """POSTs JSON to an OpenAI-compatible API with retries; one pooled ``httpx.AsyncClient``."""

    def __init__(self, settings: OpenAIClientConfig, *, component: str):
        self._settings = settings
        self._component = component
        self._secret = settings.api_key.get_secret_value() if settings.api_key else ""
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created lazily so a provider can be built outside a running event loop.
        if self._client is None:
            s = self._settings
            headers = dict(s.extra_headers)
            if self._secret:
                bearer = s.api_key_header.lower() == "authorization"
                headers[s.api_key_header] = f"Bearer {self._secret}" if bearer else self._secret
            self._client = httpx.AsyncClient(
                base_url=s.base_url.rstrip("/") + "/",
                headers=headers,
                params=s.extra_query,
                timeout=httpx.Timeout(s.timeout),
            )
        return self._client

    async def post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to ``path`` (relative to ``base_url``) and return the JSON object."""
        s = self._settings
        problem = "no attempt made"
        for attempt in range(s.max_retries + 1):
            try:
                response = await self._http().post(path, json=payload)
            except httpx.TimeoutException:
                problem, delay = f"timed out after {s.timeout:g}s", self._backoff(attempt)
            except httpx.TransportError as exc:
                problem, delay = f"connection failed ({type(exc).__name__})", self._backoff(attempt)
            else:
                if response.status_code < 400:
                    return self._json(response)
                if response.status_code != 429 and response.status_code < 500:
                    raise self._client_error(response)
                problem = f"HTTP {response.status_code}"
                asked = _retry_after(response)
                if asked is not None and asked > s.max_retry_after:
                    raise self._unavailable(f"{problem}, asked to retry after {asked:g}s", retry_after=asked)
                delay = self._backoff(attempt) if asked is None else asked
            if attempt < s.max_retries:
                logger.warning(
                    "%s %s: %s; retry %d in %.2fs", self._component, path, problem, attempt + 1, delay
                )
                await asyncio.sleep(delay)
        raise self._unavailable(f"{problem} (after {s.max_retries + 1} attempts)")

    async def health(self, name: str) -> ComponentHealth:
        """Reachability via ``GET models``: any answer below 500 means the server is up."""
        started = time.perf_counter()
        try:
            response = await self._http().get("models", timeout=min(self._settings.timeout, 5.0))
        except httpx.HTTPError as exc:
            return ComponentHealth(name=name, healthy=False, detail=f"unreachable ({type(exc).__name__})")
        latency = (time.perf_counter() - started) * 1000
        healthy = response.status_code < 500
        detail = f"{self._settings.model} at {self._host()}" + (
            "" if healthy else f": HTTP {response.status_code}"
        )
        return ComponentHealth(name=name, healthy=healthy, detail=detail, latency_ms=latency)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def bad_response(self, what: str) -> ProviderUnavailableError:
        """The error for a response that parsed but does not have the documented shape."""
        return ProviderUnavailableError(
            f"{self._component} at {self._host()} returned an unexpected response: {what}",
            code="provider_bad_response",
        )

    # -- helpers --------------------------------------------------------------------------------

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise self.bad_response("the body is not JSON") from None
        if not isinstance(body, dict):
            raise self.bad_response("the body is not a JSON object")
        return body

    def _backoff(self, attempt: int) -> float:
        s = self._settings
        ceiling = min(s.backoff_max, s.backoff_initial * (2**attempt))
        return ceiling * (0.5 + random.random() / 2)  # jitter spreads out replicas retrying together

    def _client_error(self, response: httpx.Response) -> AstrocyteError:
        detail = self._redact(_server_message(response))
        where = f"{self._component} at {self._host()}"
        if response.status_code in (401, 403):
            return ConfigError(
                f"{where} refused the credentials (HTTP {response.status_code}): {detail}; check api_key",
                code="provider_auth_failed",
            )
        return ValidationError(
            f"{where} rejected the request (HTTP {response.status_code}): {detail}", code="provider_rejected"
        )

    def _unavailable(self, problem: str, retry_after: float | None = None) -> ProviderUnavailableError:
        details = {"retry_after": retry_after} if retry_after is not None else None
        return ProviderUnavailableError(
            f"{self._component} at {self._host()} unavailable: {problem}", details=details
        )

    def _host(self) -> str:
        return httpx.URL(self._settings.base_url).host or self._settings.base_url

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
        if message:
            return str(message)[:500]
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return response.text[:200] or response.reason_phrase
