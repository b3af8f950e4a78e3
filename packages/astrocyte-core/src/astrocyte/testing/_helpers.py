"""Record builders and service helpers shared by the contract kits.

Everything here is deterministic: vectors come from a hash of a seed, never from global random
state, so a failing check fails the same way on every run.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import numpy as np

from astrocyte.types import Chunk, MemoryRecord

CONTRACT_DIMENSIONS = 16
"""Vector size every contract check writes (the mismatch check also writes this size + 1)."""

T0 = datetime(2024, 1, 1, tzinfo=UTC)
"""A fixed, whole-second instant the time-based checks count from."""


def at(hours: float) -> datetime:
    """``T0`` plus ``hours``: readable fixed instants for time filters."""
    return T0 + timedelta(hours=hours)


def unit_vector(seed: str | int, dim: int = CONTRACT_DIMENSIONS) -> np.ndarray:
    """A deterministic L2-normalised float32 vector derived from ``seed``."""
    digest = hashlib.sha256(str(seed).encode("utf-8", "surrogatepass")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    return normalised(rng.standard_normal(dim))


def normalised(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """``vector`` as float32 with unit length."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    return (array / np.linalg.norm(array)).astype(np.float32)


def angled_vector(degrees: float, dim: int = CONTRACT_DIMENSIONS) -> np.ndarray:
    """A unit vector at ``degrees`` from the first axis (in the plane of the first two axes), so
    its cosine similarity to ``angled_vector(0)`` is exactly ``cos(degrees)``."""
    vector = np.zeros(dim, dtype=np.float32)
    radians = np.deg2rad(degrees)
    vector[0], vector[1] = np.cos(radians), np.sin(radians)
    return vector


def unique_bank(label: str) -> str:
    """A bank id no other check (or earlier run against a shared backend) uses."""
    return f"contract-{label}-{uuid.uuid4().hex[:12]}"


def make_record(
    bank_id: str,
    text: str,
    *,
    tags: Sequence[str] = (),
    occurred_at: datetime | None = None,
    retained_at: datetime | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    source: str | None = None,
    embedding: np.ndarray | None = None,
    chunks: Sequence[str] | None = None,
    dim: int = CONTRACT_DIMENSIONS,
    memory_id: str | None = None,
) -> MemoryRecord:
    """A record as the engine would hand it to a store.

    Without ``chunks`` the record has one chunk holding ``text``; with them, one chunk per text
    (and ``text`` is ignored in favour of the chunks joined by spaces). Each chunk's vector is
    ``unit_vector(chunk text)`` unless ``embedding`` is given (single-chunk records only).
    """
    pieces = list(chunks) if chunks is not None else [text]
    if embedding is not None and len(pieces) != 1:
        raise ValueError("embedding= is for single-chunk records; multi-chunk records derive vectors")
    built = tuple(
        Chunk(
            index=i,
            text=piece,
            embedding=normalised(embedding) if embedding is not None else unit_vector(piece, dim),
        )
        for i, piece in enumerate(pieces)
    )
    return MemoryRecord(
        memory_id=memory_id or uuid.uuid4().hex,
        bank_id=bank_id,
        text=" ".join(pieces) if chunks is not None else text,
        chunks=built,
        tags=tuple(tags),
        metadata=dict(metadata or {}),
        occurred_at=occurred_at,
        retained_at=retained_at or datetime.now(UTC),
        source=source,
        idempotency_key=idempotency_key,
    )


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to anything but empty/0/false."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def missing_service(reason: str) -> NoReturn:
    """Skip the current test because a service is not configured, except under CI, where a missing
    service is a failure (a green CI run must have run everything)."""
    import pytest  # imported late: the kit needs pytest only when tests run

    if in_ci():
        pytest.fail(f"{reason} (CI is set, so a missing service fails instead of skipping)")
    pytest.skip(reason)


def service_env(variable: str) -> str:
    """The value of the environment variable naming a test service (a URL, a DSN, a binary);
    :func:`missing_service` when it is unset: a skip locally, a failure under CI."""
    value = os.environ.get(variable)
    if not value:
        missing_service(
            f'{variable} is not set (start the test services: scripts/services up, then eval "$(scripts/services env)")'
        )
    return value
