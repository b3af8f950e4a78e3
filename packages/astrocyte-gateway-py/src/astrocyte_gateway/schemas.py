"""Request and response bodies of the HTTP API (pydantic lives only at this edge).

Field names are the core's (DESIGN §3.1); responses are the core's dataclasses serialised as they
are, described here so the OpenAPI schema documents them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetainBody(_Body):
    content: str = Field(min_length=1, description="The text to remember.")
    bank_id: str = Field(min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    occurred_at: datetime | None = None
    source: str | None = Field(default=None, max_length=255)
    idempotency_key: str | None = Field(
        default=None, max_length=255, description="Or the Idempotency-Key header."
    )


class TimeRange(_Body):
    start: datetime | None = None
    end: datetime | None = None


class RecallBody(_Body):
    query: str = Field(min_length=1)
    bank_id: str | None = Field(default=None, min_length=1, max_length=255)
    banks: list[str] | None = Field(default=None, max_length=64)
    max_results: int = Field(default=10, ge=1, le=200)
    max_tokens: int | None = Field(default=None, ge=1, le=100_000)
    tags: list[str] | None = None
    time_range: TimeRange | None = None


class ReflectBody(_Body):
    query: str = Field(min_length=1)
    bank_id: str | None = Field(default=None, min_length=1, max_length=255)
    banks: list[str] | None = Field(default=None, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, le=100_000)
    include_sources: bool = True


class ForgetBody(_Body):
    bank_id: str = Field(min_length=1, max_length=255)
    memory_ids: list[str] | None = None
    tags: list[str] | None = None
    before: datetime | None = None
    scope: Literal["all"] | None = None


class CreateBankBody(_Body):
    bank_id: str = Field(min_length=1, max_length=255)


# -- responses (documentation only: handlers return the core's dataclasses serialised) -----------


class RetainResponse(BaseModel):
    stored: bool
    memory_id: str | None = None
    deduplicated: bool = False
    error: str | None = None


class MemoryHitOut(BaseModel):
    memory_id: str
    bank_id: str
    text: str
    score: float
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    occurred_at: datetime | None = None
    retained_at: datetime | None = None
    source: str | None = None
    authority_tier: str | None = None


class RecallResponse(BaseModel):
    hits: list[MemoryHitOut]
    total_available: int
    truncated: bool
    trace: dict[str, Any] = {}
    authority_context: str | None = None


class ReflectResponse(BaseModel):
    answer: str
    confidence: float
    sources: list[MemoryHitOut] = []


class ForgetResponse(BaseModel):
    deleted_count: int


class BankListResponse(BaseModel):
    banks: list[str]


class BankInfoResponse(BaseModel):
    bank_id: str
    created_at: datetime | None = None


class BankStatsResponse(BaseModel):
    bank_id: str
    memory_count: int
    chunk_count: int
    oldest_retained_at: datetime | None = None
    newest_retained_at: datetime | None = None


class ErrorResponse(BaseModel):
    detail: str
    code: str
    request_id: str | None = None
