"""Turning one Kafka record into an :class:`IngestMessage`, or saying why it is poison.

The value is always decoded (a null value, a tombstone, is poison: there is nothing to remember);
the key and headers only when the mapping or the idempotency key reads them, so a binary tracing
header does not poison a record. Whatever cannot be decoded raises :class:`PoisonRecord` with a
stable code; the driver dead-letters it. A missing bank is *not* poison here: the source may supply
a default bank or a bank template, and the sink decides (and rejects, which dead-letters too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from astrocyte.ingest.sink import IngestMessage

from astrocyte_ingestion_kafka.config import IdempotencyKey, RecordMapping


class Record(Protocol):
    """The parts of ``aiokafka.ConsumerRecord`` the decoder reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class PoisonRecord(Exception):
    """A record that can never become a memory: dead-letter it with ``code`` and ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def record_ref(topic: str, partition: int, offset: int) -> str:
    """The transport reference of a record (``topic:partition:offset``), as logs and dead letters
    show it; also the default idempotency key and the dead letter's record key."""
    return f"{topic}:{partition}:{offset}"


class RecordDecoder:
    """Decodes records for one mapping and idempotency key source."""

    def __init__(self, mapping: RecordMapping, key_source: IdempotencyKey, max_bytes: int) -> None:
        self.mapping = mapping
        self.key_source = key_source
        self.max_bytes = max_bytes
        parts = (mapping.content, mapping.bank, mapping.tags, mapping.metadata, mapping.occurred_at)
        self._plain = {name for name in (*parts, mapping.principal) if name and not name.startswith("@")}
        self._header_names = self._plain | set(mapping.metadata_headers)
        if key_source.header:
            self._header_names.add(key_source.header)

    def decode(self, record: Record) -> IngestMessage:
        """Decode one record; raises :class:`PoisonRecord` when it cannot be a message."""
        ref = record_ref(record.topic, record.partition, record.offset)
        value = record.value
        if value is None:
            raise PoisonRecord("value_null", "the record has a null value (a tombstone)")
        size = len(value) + len(record.key or b"") + sum(len(v or b"") for _, v in record.headers)
        if size > self.max_bytes:
            raise PoisonRecord("record_too_large", f"{size} bytes (max_record_bytes is {self.max_bytes})")
        fields = self._fields(record, value)
        mapping = self.mapping
        content = fields.get(mapping.content) if mapping.content != "@key" else self._key(record)
        if not isinstance(content, str) or not content:
            raise PoisonRecord("content_missing", f"the record has no string {mapping.content!r}")
        occurred = _occurred_at(self._part(fields, record, mapping.occurred_at))
        if occurred is None and mapping.occurred_at_from_timestamp:
            occurred = _timestamp(record.timestamp)
        metadata = _metadata(self._part(fields, record, mapping.metadata))
        for name in mapping.metadata_headers:
            if name in fields and name not in metadata:
                metadata[name] = fields[name]
        return IngestMessage(
            idempotency_key=self._idempotency_key(record, fields) or ref,
            content=content,
            bank_id=_optional_text(self._part(fields, record, mapping.bank), "bank_invalid"),
            metadata=metadata,
            tags=_tags(self._part(fields, record, mapping.tags)),
            occurred_at=occurred,
            principal=_optional_text(self._part(fields, record, mapping.principal), "principal_invalid"),
            raw_ref=ref,
        )

    def _fields(self, record: Record, value: bytes) -> dict[str, Any]:
        """Headers the mapping names (decoded), overlaid by the JSON value's keys."""
        fields: dict[str, Any] = {}
        for name, raw in record.headers:
            if name in self._header_names and raw is not None:
                fields[name] = _utf8(raw, f"header {name!r}")
        text = _utf8(value, "the value")
        form = self.mapping.value_format
        document = _json_object(text, required=form == "json") if form != "text" else None
        if document is None:
            fields[self.mapping.content] = text
        else:
            fields.update(document)
        return fields

    def _part(self, fields: Mapping[str, Any], record: Record, source: str | None) -> Any:
        if source is None:
            return None
        if source == "@key":
            return self._key(record)
        if source == "@timestamp":
            return _timestamp(record.timestamp)
        return fields.get(source)

    def _key(self, record: Record) -> str | None:
        return None if record.key is None else _utf8(record.key, "the record key")

    def _idempotency_key(self, record: Record, fields: Mapping[str, Any]) -> str | None:
        source = self.key_source.source
        if source == "key":
            return self._key(record) or None
        if source == "header":
            value = next((raw for name, raw in record.headers if name == self.key_source.header), None)
            return _utf8(value, f"header {self.key_source.header!r}") or None if value else None
        return None


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise PoisonRecord("record_not_utf8", f"{what} is not UTF-8") from None


def _json_object(text: str, *, required: bool) -> dict[str, Any] | None:
    """The JSON object ``text`` holds; None (text content) when it is not one and JSON is optional."""
    if not required and not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise PoisonRecord("value_bad_json", f"the value is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        if required:
            raise PoisonRecord("value_not_object", "the value must be a JSON object")
        return None
    return document


def _optional_text(value: Any, code: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PoisonRecord(code, "must be a string")
    return str(value)


def _tags(value: Any) -> tuple[str, ...]:
    """A JSON list of strings, or (from a header) a comma-separated string or JSON list."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if not value.lstrip().startswith("["):
            return tuple(tag.strip() for tag in value.split(",") if tag.strip())
        try:
            value = json.loads(value)
        except ValueError:
            raise PoisonRecord("tags_invalid", "tags look like a JSON list but do not parse") from None
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise PoisonRecord("tags_invalid", "tags must be a list of strings or a comma-separated string")
    return tuple(value)


def _metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError:
            raise PoisonRecord("metadata_invalid", "metadata is not a JSON object") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PoisonRecord("metadata_invalid", "metadata must be a JSON object")
    return dict(value)


def _occurred_at(value: Any) -> datetime | None:
    """ISO-8601 (``Z`` allowed; naive means UTC), Unix epoch seconds, or a datetime."""
    if value is None or value == "" or isinstance(value, datetime):
        return value or None
    try:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a time")
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), tz=UTC)
        if isinstance(value, str):
            try:
                return datetime.fromtimestamp(float(value), tz=UTC)
            except ValueError:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise PoisonRecord("occurred_at_invalid", "occurred_at must be ISO-8601 or Unix epoch seconds")


def _timestamp(millis: int | None) -> datetime | None:
    if millis is None or millis < 0:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
