"""Turning one stream entry into an :class:`IngestMessage`, or saying why it is poison.

Only the fields the mapping names are decoded, so an unrelated binary field does not poison an
entry. Whatever cannot be decoded raises :class:`PoisonEntry` with a stable code; the driver
dead-letters it. A missing bank is *not* poison here: the source may supply a default bank or a
bank template, and the sink decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from astrocyte.ingest.sink import IngestMessage

from astrocyte_ingestion_redis.config import FieldMapping

RawFields = Mapping[bytes, bytes]


class PoisonEntry(Exception):
    """An entry that can never become a memory: dead-letter it with ``code`` and ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def entry_ref(stream: str, entry_id: str) -> str:
    """The transport reference of an entry, as logs and dead letters show it."""
    return f"{stream}:{entry_id}"


def decode_entry(stream: str, entry_id: str, raw: RawFields, mapping: FieldMapping) -> IngestMessage:
    """Decode one entry; raises :class:`PoisonEntry` when it cannot be a message."""
    return decoder_for(mapping).decode(stream, entry_id, raw)


@lru_cache(maxsize=32)
def decoder_for(mapping: FieldMapping) -> EntryDecoder:
    """The :class:`EntryDecoder` of ``mapping`` (mappings are frozen, so one per distinct mapping)."""
    return EntryDecoder(mapping)


class EntryDecoder:
    """Decodes entries for one :class:`FieldMapping`, with the field lookups worked out once."""

    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        names: list[str | None] = [mapping.content, mapping.bank, mapping.tags, mapping.metadata]
        names += [mapping.occurred_at, *mapping.metadata_fields, mapping.idempotency_key, mapping.principal]
        # Entry field name (bytes) -> part name, for every mapped part except the payload itself.
        self._wanted = {name.encode(): name for name in names if name and name != mapping.payload}
        self._payload_key = mapping.payload.encode()
        self._from_entry_id = mapping.occurred_at_from_entry_id
        # Entries of a batch often share their millisecond: reuse the last one's datetime.
        self._last_time: tuple[str, datetime | None] = ("", None)

    def decode(self, stream: str, entry_id: str, raw: RawFields) -> IngestMessage:
        """Decode one entry; raises :class:`PoisonEntry` when it cannot be a message."""
        mapping = self.mapping
        values = self._values(raw)
        content = values.get(mapping.content)
        if not isinstance(content, str):
            raise PoisonEntry("content_missing", f"the entry has no string {mapping.content!r}")
        key = _optional_text(values, mapping.idempotency_key, "idempotency_key_invalid")
        occurred = _occurred_at(values.get(mapping.occurred_at))
        if occurred is None and self._from_entry_id:
            occurred = self._entry_time(entry_id)
        ref = f"{stream}:{entry_id}"
        bank_id = _optional_text(values, mapping.bank, "bank_invalid")
        metadata = _metadata(values, mapping) if self._any_metadata(values) else {}
        tags = _tags(values.get(mapping.tags))
        principal = _optional_text(values, mapping.principal, "principal_invalid")
        return IngestMessage(
            idempotency_key=key or ref,
            content=content,
            bank_id=bank_id,
            metadata=metadata,
            tags=tags,
            occurred_at=occurred,
            principal=principal,
            raw_ref=ref,
        )

    def _any_metadata(self, values: Mapping[str, Any]) -> bool:
        """False when the entry has no metadata part at all (then it is ``{}``, without the parse)."""
        return self.mapping.metadata in values or bool(self.mapping.metadata_fields)

    def _values(self, raw: RawFields) -> dict[str, Any]:
        """The mapped values: strings from entry fields, overlaid in the payload form by the JSON
        object's keys (so a producer may put e.g. the bank beside the payload)."""
        wanted = self._wanted
        values: dict[str, Any] = {}
        for field, value in raw.items():  # usually fewer entry fields than mapped parts
            name = wanted.get(field)
            if name is not None:
                try:
                    values[name] = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise PoisonEntry("entry_not_utf8", f"field {name!r} is not UTF-8") from None
        payload_form = self.mapping.format
        if payload_form != "fields":
            payload = raw.get(self._payload_key)
            if payload_form == "payload" or payload is not None:
                values.update(_document(self.mapping.payload, payload))
        return values

    def _entry_time(self, entry_id: str) -> datetime | None:
        millis = entry_id.partition("-")[0]
        last_millis, last_time = self._last_time
        if millis != last_millis:
            last_time = _entry_time(millis)
            self._last_time = (millis, last_time)
        return last_time


def _document(name: str, payload: bytes | None) -> dict[str, Any]:
    if payload is None:
        raise PoisonEntry("payload_missing", f"the entry has no {name!r} field")
    try:
        document = json.loads(_text(name, payload))
    except ValueError as exc:
        raise PoisonEntry("payload_bad_json", f"{name!r} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PoisonEntry("payload_not_object", f"{name!r} must hold a JSON object")
    return document


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise PoisonEntry("entry_not_utf8", f"field {name!r} is not UTF-8") from None


def _optional_text(values: Mapping[str, Any], name: str | None, code: str) -> str | None:
    if name is None:
        return None
    value = values.get(name)
    if type(value) is str:  # the usual case, decided before the general checks
        return value or None
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PoisonEntry(code, f"{name!r} must be a string")
    return str(value)


def _tags(value: Any) -> tuple[str, ...]:
    """A JSON list of strings, or (fields form) a comma-separated string."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                raise PoisonEntry("tags_invalid", "tags look like a JSON list but do not parse") from None
        else:
            return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise PoisonEntry("tags_invalid", "tags must be a list of strings or a comma-separated string")
    return tuple(value)


def _metadata(values: Mapping[str, Any], mapping: FieldMapping) -> dict[str, Any]:
    value = values.get(mapping.metadata)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError:
            raise PoisonEntry("metadata_invalid", f"{mapping.metadata!r} is not a JSON object") from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise PoisonEntry("metadata_invalid", f"{mapping.metadata!r} must be a JSON object")
    for name in mapping.metadata_fields:
        if name in values:
            value[name] = values[name]
    return value


def _occurred_at(value: Any) -> datetime | None:
    """ISO-8601 (``Z`` allowed; naive means UTC) or Unix epoch seconds."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a time")
        if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
            return datetime.fromtimestamp(float(value), tz=UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise PoisonEntry("occurred_at_invalid", "occurred_at must be ISO-8601 or Unix epoch seconds")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _entry_time(millis: str) -> datetime | None:
    """The time Redis stamped on an auto-generated entry id (``millis``: the part before the dash)."""
    try:
        return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
