"""``openai``: embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint.

Config (``embedder_config``): ``model`` and ``dimensions`` (required: the store sizes its index from
it), ``base_url``, ``api_key``, ``timeout``, ``max_retries``, ``batch_size`` (inputs per request),
``max_concurrency`` (requests in flight per call), ``send_dimensions`` (pass ``dimensions`` to the
server, for models that can shorten their output such as ``text-embedding-3-*``), plus the client
settings in :class:`~astrocyte._openai_http.OpenAIClientConfig`. Every returned vector is checked
against ``dimensions`` and L2-normalised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from astrocyte._openai_http import OpenAIClientConfig, OpenAIHTTPClient
from astrocyte.config import validate_model
from astrocyte.errors import ValidationError
from astrocyte.types import ComponentHealth

__all__ = ["OpenAIEmbedder", "OpenAIEmbedderConfig"]


class OpenAIEmbedderConfig(OpenAIClientConfig):
    dimensions: int = Field(ge=1, le=65_536)
    batch_size: int = Field(default=128, ge=1, le=2048)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    send_dimensions: bool = False


class OpenAIEmbedder:
    """Embedder over HTTP; see the module docstring for its config."""

    #: Each call costs a request (and money): retried idempotency keys are looked up first.
    remote = True

    def __init__(self, config: Mapping[str, Any]):
        self._settings = validate_model(OpenAIEmbedderConfig, config)
        self.dimensions: int = self._settings.dimensions
        self._client = OpenAIHTTPClient(self._settings, component="embedder")
        self._gate = asyncio.Semaphore(self._settings.max_concurrency)

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` for unknown keys, missing ``model``/``dimensions`` or bad values."""
        validate_model(OpenAIEmbedderConfig, config)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches of ``batch_size``; one row per text, in order."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        size = self._settings.batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        parts = await asyncio.gather(*(self._embed_batch(batch) for batch in batches))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        payload: dict[str, Any] = {
            "model": self._settings.model,
            "input": list(texts),
            "encoding_format": "float",
        }
        if self._settings.send_dimensions:
            payload["dimensions"] = self.dimensions
        async with self._gate:
            body = await self._client.post("embeddings", payload)
        return self._matrix(body, len(texts))

    def _matrix(self, body: dict[str, Any], expected: int) -> np.ndarray:
        data = body.get("data")
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise self._client.bad_response(f"{got} embeddings for {expected} inputs")
        try:
            rows = [item["embedding"] for item in sorted(data, key=lambda item: item["index"])]
            matrix = np.asarray(rows, dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise self._client.bad_response("embeddings are not lists of numbers") from None
        if matrix.ndim != 2 or matrix.shape[1] != self.dimensions:
            width = matrix.shape[1] if matrix.ndim == 2 else "ragged"
            raise ValidationError(
                f"embedder model {self._settings.model!r} returned vectors of {width} dimensions but "
                f"embedder_config.dimensions is {self.dimensions}; set it to the model's size "
                "(or send_dimensions: true for models that can shorten their output)",
                code="embedding_dimension_mismatch",
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0.0] = 1.0
        return matrix / norms

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def health(self) -> ComponentHealth:
        """Whether the endpoint answers (``GET models``), without spending tokens."""
        return await self._client.health("embedder")

    def __repr__(self) -> str:
        s = self._settings
        return f"OpenAIEmbedder(base_url={s.base_url!r}, model={s.model!r}, dimensions={self.dimensions})"
