"""The configuration schema of a Redis Streams source (the driver keys of a ``sources`` entry).

Validated by :meth:`RedisStreamDriver.validate_config` through the core's ``validate_model``, so a
bad key is reported as ``sources.<id>.<key>: ...`` like every other source.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from astrocyte.ingest.driver import DriverConfig
from pydantic import Field, ValidationInfo, field_validator

STREAM_ID = re.compile(r"^(\$|\d+(-\d+)?)$")
NAME = re.compile(r"^\S{1,200}$")
URL_SCHEMES = ("redis", "rediss", "unix")


class TlsOptions(DriverConfig):
    """TLS settings for ``rediss://`` URLs. Paths are read when the driver connects."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    check_hostname: bool = True


class FieldMapping(DriverConfig):
    """Where a stream entry keeps each part of a memory.

    ``format``: ``fields`` reads each part from its own entry field; ``payload`` reads a JSON object
    from the ``payload`` field and takes each part from its keys (a part missing there is read from
    the entry field of that name); ``auto`` (default) uses the payload form when the entry has that
    field, else the fields form. The same names are used as field names and as JSON keys.
    """

    format: Literal["auto", "fields", "payload"] = "auto"
    payload: str = "payload"
    content: str = "content"
    bank: str = "bank_id"
    tags: str = "tags"
    metadata: str = "metadata"
    metadata_fields: tuple[str, ...] = ()
    occurred_at: str = "occurred_at"
    idempotency_key: str | None = None
    principal: str | None = "principal"
    occurred_at_from_entry_id: bool = True


class RedisStreamConfig(DriverConfig):
    """Every driver key of a Redis Streams source, with its default. See the package README."""

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    tls: TlsOptions | None = None
    streams: tuple[str, ...] = Field(min_length=1)
    group: str = "astrocyte"
    create_group: bool = True
    start_id: str = "0"
    consumer: str | None = None
    batch_size: int = Field(default=500, ge=1, le=10_000)
    block_ms: int = Field(default=1_000, ge=1, le=60_000)
    concurrency: int = Field(default=4, ge=1, le=64)
    max_deliveries: int = Field(default=10, ge=1, le=10_000)
    dead_letter_stream: str = "{stream}:dlq"
    dead_letter_maxlen: int | None = Field(default=None, ge=1)
    claim_idle_ms: int = Field(default=60_000, ge=100)
    claim_interval_ms: int | None = Field(default=None, ge=50)
    forget_idle_consumers_ms: int | None = Field(default=3_600_000, ge=1_000)
    backoff_initial_ms: int = Field(default=100, ge=1)
    backoff_max_ms: int = Field(default=30_000, ge=1)
    reconnect_max_ms: int = Field(default=1_000, ge=50, le=60_000)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    command_timeout_s: float = Field(default=10.0, gt=0)
    stats_interval_s: float = Field(default=1.0, gt=0)
    fields: FieldMapping = Field(default_factory=FieldMapping)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in URL_SCHEMES:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("streams")
    @classmethod
    def _streams(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not NAME.match(name) for name in value):
            raise ValueError("stream keys are 1-200 characters without whitespace")
        if len(set(value)) != len(value):
            raise ValueError("a stream is listed twice")
        return value

    @field_validator("group", "consumer")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME.match(value):
            raise ValueError("must be 1-200 characters without whitespace")
        return value

    @field_validator("start_id")
    @classmethod
    def _start_id(cls, value: str) -> str:
        if not STREAM_ID.match(value):
            raise ValueError("must be '$' (new entries only), '0' (the whole stream) or an entry id")
        return value

    # Cross-key checks sit on the later key (fields validate in declaration order), so the error
    # names the key to fix.
    @field_validator("username_env")
    @classmethod
    def _one_username(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("username"):
            raise ValueError("set username or username_env, not both")
        return value

    @field_validator("tls")
    @classmethod
    def _tls_needs_rediss(cls, value: TlsOptions | None, info: ValidationInfo) -> TlsOptions | None:
        if value is not None and urlsplit(info.data.get("url", "")).scheme != "rediss":
            raise ValueError("tls options need a rediss:// url")
        return value

    @field_validator("dead_letter_stream")
    @classmethod
    def _dead_letters_apart(cls, value: str, info: ValidationInfo) -> str:
        streams = info.data.get("streams") or ()
        if set(streams) & {value.replace("{stream}", stream) for stream in streams}:
            raise ValueError("resolves to a source stream; dead letters need a stream of their own")
        return value

    @field_validator("backoff_max_ms")
    @classmethod
    def _backoff_order(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("backoff_initial_ms", 0):
            raise ValueError("is smaller than backoff_initial_ms")
        return value

    def dead_letter_for(self, stream: str) -> str:
        """The dead-letter stream of ``stream`` (``{stream}`` in the template is replaced)."""
        return self.dead_letter_stream.replace("{stream}", stream)

    @property
    def claim_interval_s(self) -> float:
        """How often idle entries of other consumers are swept (default: half the idle time, <= 30s)."""
        if self.claim_interval_ms is not None:
            return self.claim_interval_ms / 1000
        return min(30.0, self.claim_idle_ms / 2000)
