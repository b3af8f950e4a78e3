"""``hashing``: the offline default embedder.

Feature hashing (Weinberger et al., 2009) of lowercased word unigrams and bigrams into a fixed
number of dimensions, with a sign bit from the same stable hash so collisions cancel out on average.
Deterministic across processes and machines (blake2b, not Python's salted ``hash``), no model
download, and fast: features are hashed once (cached) and scattered with one ``numpy.bincount`` per
batch. It captures word overlap, not meaning; use ``openai`` (or any compatible server) for that.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from hashlib import blake2b
from itertools import chain
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from astrocyte.config import validate_model
from astrocyte.types import ComponentHealth

__all__ = ["HashingEmbedder", "HashingEmbedderConfig"]

_WORD = re.compile(r"\w+")
# Batches bigger than this are hashed in a worker thread so the event loop stays responsive.
_INLINE_BATCH = 64


class HashingEmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimensions: int = Field(default=384, ge=8, le=16_384)
    bigrams: bool = True


class HashingEmbedder:
    """Deterministic bag-of-words embedder. Config: ``dimensions`` (384), ``bigrams`` (true)."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        settings = validate_model(HashingEmbedderConfig, config or {})
        self.dimensions: int = settings.dimensions
        self._bigrams = settings.bigrams
        self._feature = _feature_hasher(self.dimensions)

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` for unknown keys or bad values."""
        validate_model(HashingEmbedderConfig, config)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: shape ``(len(texts), dimensions)``, float32, rows L2-normalised."""
        if len(texts) > _INLINE_BATCH:
            return await asyncio.to_thread(self.embed_sync, texts)
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """The same as :meth:`embed`, on the calling thread."""
        dim = self.dimensions
        features = [self._features(text) for text in texts]
        counts = [len(row) for row in features]
        # One C-level map over every feature of the batch: no per-feature Python loop body.
        codes = np.fromiter(
            map(self._feature, chain.from_iterable(features)), dtype=np.int64, count=sum(counts)
        )
        flat = codes >> 1
        if len(texts) > 1:
            flat += np.repeat(np.arange(len(texts), dtype=np.int64) * dim, counts)
        signs = (codes & 1) * 2.0 - 1.0
        matrix = np.bincount(flat, weights=signs, minlength=len(texts) * dim).reshape(len(texts), dim)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        # Opposite-signed collisions can cancel every feature; 1.0 keeps such a row at zero, not NaN.
        norms[norms == 0.0] = 1.0
        return (matrix / norms).astype(np.float32, copy=False)

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        if not words:
            # Text with no word characters (emoji, punctuation) still gets a stable, non-zero vector.
            return [text.strip() or "\x00empty"]
        if not self._bigrams or len(words) == 1:
            return words
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    async def close(self) -> None:
        """Nothing to release."""

    async def health(self) -> ComponentHealth:
        """Always healthy: pure computation."""
        return ComponentHealth(name="embedder", healthy=True, detail=f"hashing ({self.dimensions} dims)")

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimensions={self.dimensions}, bigrams={self._bigrams})"


@lru_cache(maxsize=16)
def _feature_hasher(dimensions: int) -> Any:
    """A cached ``feature -> code`` function per dimension count, shared by instances: the code is
    ``index << 1 | sign_bit`` (sign +1 when the bit is set), one int so a batch maps to an array."""

    @lru_cache(maxsize=1 << 16)  # ~16 MB at most; frequent words stay, rare bigrams cycle
    def feature(text: str) -> int:
        value = int.from_bytes(blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
        return ((value >> 1) % dimensions) << 1 | (value & 1)

    return feature
