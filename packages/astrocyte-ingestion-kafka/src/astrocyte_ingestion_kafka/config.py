"""The configuration schema of a Kafka source (the driver keys of a ``sources`` entry).

Validated by :meth:`KafkaStreamDriver.validate_config` through the core's ``validate_model``, so a
bad key is reported as ``sources.<id>.<key>: ...`` like every other source. Secrets are never
values here: the config names environment variables, read when the driver connects.
"""

from __future__ import annotations

import re
from typing import Literal

from astrocyte.ingest.driver import DriverConfig
from pydantic import Field, ValidationInfo, field_validator, model_validator

TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
NAME = re.compile(r"^\S{1,255}$")
SPECIAL_SOURCES = ("@key", "@timestamp")


class Security(DriverConfig):
    """How the driver authenticates to the brokers.

    ``protocol``: ``PLAINTEXT``, ``SSL`` (TLS, optionally with a client certificate), ``SASL_PLAINTEXT``
    or ``SASL_SSL``. SASL ``mechanism``: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``, with the
    user name and password read from the environment variables ``username_env``/``password_env``.
    """

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password_env: str | None = None
    check_hostname: bool = True
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username_env: str | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Security:
        sasl = self.protocol.startswith("SASL_")
        if sasl and not (self.mechanism and self.username_env and self.password_env):
            raise ValueError(f"{self.protocol} needs mechanism, username_env and password_env")
        if not sasl and (self.mechanism or self.username_env or self.password_env):
            raise ValueError(
                "mechanism, username_env and password_env need protocol SASL_PLAINTEXT or SASL_SSL"
            )
        tls = self.protocol in ("SSL", "SASL_SSL")
        if not tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError("ca_file, cert_file and key_file need protocol SSL or SASL_SSL")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs both cert_file and key_file")
        return self


class RecordMapping(DriverConfig):
    """How a record becomes a memory.

    ``value_format``: ``json`` (the value must be a JSON object; anything else is poison), ``text``
    (the whole value, UTF-8, is the content) or ``auto`` (a JSON object when the value is one,
    else text). Each part names where it is read: a plain name is a key of the JSON value and, when
    the value has no such key (or is text), the record header of that name; ``@key`` is the record
    key; ``@timestamp`` (occurred_at only) is the record timestamp. ``occurred_at`` falls back to the
    record timestamp when ``occurred_at_from_timestamp`` is on. ``metadata_headers`` copies those
    headers into metadata.
    """

    value_format: Literal["auto", "json", "text"] = "auto"
    content: str = "content"
    bank: str | None = "bank_id"
    tags: str | None = "tags"
    metadata: str | None = "metadata"
    occurred_at: str | None = "occurred_at"
    occurred_at_from_timestamp: bool = True
    principal: str | None = "principal"
    metadata_headers: tuple[str, ...] = ()

    @field_validator("content", "bank", "tags", "metadata", "principal")
    @classmethod
    def _no_timestamp(cls, value: str | None) -> str | None:
        if value == "@timestamp":
            raise ValueError("@timestamp can only be the source of occurred_at")
        if value is not None and value.startswith("@") and value not in SPECIAL_SOURCES:
            raise ValueError("a source starting with @ must be @key or @timestamp")
        return value


class IdempotencyKey(DriverConfig):
    """Where a record's idempotency key comes from: ``offset`` (``<topic>:<partition>:<offset>``,
    always present and stable across redeliveries), ``key`` (the record key) or ``header`` (the
    header named ``header``). A record without the chosen key or header falls back to its offset."""

    source: Literal["offset", "key", "header"] = "offset"
    header: str | None = None

    @model_validator(mode="after")
    def _header_named(self) -> IdempotencyKey:
        if (self.source == "header") != bool(self.header):
            raise ValueError("source header needs a header name (and only it takes one)")
        return self


class KafkaSourceConfig(DriverConfig):
    """Every driver key of a Kafka source, with its default. See the package README."""

    bootstrap_servers: tuple[str, ...] = Field(min_length=1)
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = Field(default=None, validate_default=True)
    group: str = "astrocyte"
    group_instance_id: str | None = None
    client_id: str | None = None
    start_offset: Literal["earliest", "latest"] = "earliest"
    security: Security = Field(default_factory=Security)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    max_in_flight_per_partition: int = Field(default=2_000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(default=200, ge=1, le=10_000)
    max_record_bytes: int = Field(default=1_048_576, ge=1)
    dead_letter_topic: str = "{topic}.dlq"
    mapping: RecordMapping = Field(default_factory=RecordMapping)
    idempotency_key: IdempotencyKey = Field(default_factory=IdempotencyKey)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    rebalance_drain_s: float = Field(default=10.0, ge=0)
    request_timeout_ms: int = Field(default=15_000, ge=1_000)
    backoff_initial_ms: int = Field(default=100, ge=1)
    backoff_max_ms: int = Field(default=30_000, ge=1)
    probe_interval_s: float = Field(default=1.0, gt=0)
    probe_timeout_s: float = Field(default=3.0, gt=0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for server in value:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not TOPIC.match(topic) for topic in value):
            raise ValueError("topic names are 1-249 letters, digits and ._-")
        if len(set(value)) != len(value):
            raise ValueError("a topic is listed twice")
        return value

    @field_validator("topic_pattern")
    @classmethod
    def _pattern(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            if info.data.get("topics"):
                raise ValueError("set topics or topic_pattern, not both")
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        elif not info.data.get("topics"):
            raise ValueError("set topics (a list) or topic_pattern (a regular expression)")
        return value

    @field_validator("group", "group_instance_id", "client_id")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME.match(value):
            raise ValueError("must be 1-255 characters without whitespace")
        return value

    @field_validator("dead_letter_topic")
    @classmethod
    def _dead_letters_apart(cls, value: str, info: ValidationInfo) -> str:
        if not TOPIC.match(value.replace("{topic}", "t")):
            raise ValueError("must be a topic name (letters, digits, ._-), optionally with {topic}")
        topics = info.data.get("topics") or ()
        if set(topics) & {value.replace("{topic}", topic) for topic in topics}:
            raise ValueError("resolves to a source topic; dead letters need a topic of their own")
        pattern = info.data.get("topic_pattern")
        if pattern and "{topic}" not in value and re.fullmatch(pattern, value):
            raise ValueError("matches topic_pattern; the driver would consume its own dead letters")
        return value

    @field_validator("heartbeat_interval_ms")
    @classmethod
    def _heartbeat(cls, value: int, info: ValidationInfo) -> int:
        if value * 3 > info.data.get("session_timeout_ms", 10_000):
            raise ValueError("must be at most a third of session_timeout_ms")
        return value

    @field_validator("backoff_max_ms")
    @classmethod
    def _backoff_order(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("backoff_initial_ms", 0):
            raise ValueError("is smaller than backoff_initial_ms")
        return value

    def dead_letter_for(self, topic: str) -> str:
        """The dead-letter topic of ``topic`` (``{topic}`` in the template is replaced)."""
        return self.dead_letter_topic.replace("{topic}", topic)
