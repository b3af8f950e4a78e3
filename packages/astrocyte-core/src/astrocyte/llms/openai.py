"""``openai``: reflect's LLM over any OpenAI-compatible ``/v1/chat/completions`` endpoint.

Config (``llm_config``): ``model`` (required), ``base_url``, ``api_key``, ``timeout``, ``max_retries``,
``temperature`` (0.2), ``max_tokens`` (the default answer budget, 512), plus the client settings in
:class:`~astrocyte._openai_http.OpenAIClientConfig` (retries, ``Retry-After``, error mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from astrocyte._openai_http import OpenAIClientConfig, OpenAIHTTPClient
from astrocyte.config import validate_model
from astrocyte.types import ComponentHealth

__all__ = ["OpenAIChatLLM", "OpenAIChatConfig"]


class OpenAIChatConfig(OpenAIClientConfig):
    temperature: float = Field(default=0.2, ge=0, le=2)
    max_tokens: int = Field(default=512, ge=1)


class OpenAIChatLLM:
    """Chat completions with one system and one user message; see the module docstring."""

    def __init__(self, config: Mapping[str, Any]):
        self._settings = validate_model(OpenAIChatConfig, config)
        self._client = OpenAIHTTPClient(self._settings, component="llm")

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` for unknown keys, a missing ``model`` or bad values."""
        validate_model(OpenAIChatConfig, config)

    async def complete(self, system: str, user: str, *, max_tokens: int | None = None) -> str:
        """The assistant's reply text."""
        payload = {
            "model": self._settings.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": self._settings.temperature,
            "max_tokens": max_tokens or self._settings.max_tokens,
        }
        body = await self._client.post("chat/completions", payload)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise self._client.bad_response("no choices[0].message.content") from None
        if not isinstance(content, str):
            raise self._client.bad_response("the message content is not text")
        return content.strip()

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def health(self) -> ComponentHealth:
        """Whether the endpoint answers (``GET models``), without spending tokens."""
        return await self._client.health("llm")

    def __repr__(self) -> str:
        return f"OpenAIChatLLM(base_url={self._settings.base_url!r}, model={self._settings.model!r})"
