"""Entries to messages: both forms, every mapped part, and every kind of poison."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from astrocyte_ingestion_redis.config import FieldMapping
from astrocyte_ingestion_redis.decode import PoisonEntry, decode_entry

ENTRY_ID = "1700000000123-4"
DEFAULT = FieldMapping()


def test_fields_form_maps_every_part() -> None:
    mapping = FieldMapping(idempotency_key="event_id", metadata_fields=("user",))
    message = decode_entry(
        "events",
        ENTRY_ID,
        {
            b"content": "Ana prefers tea ☕".encode(),
            b"bank_id": b"user-ana",
            b"tags": b"prefs, drinks,",
            b"metadata": b'{"channel": "chat"}',
            b"user": b"ana",
            b"occurred_at": b"2024-05-01T10:00:00Z",
            b"event_id": b"evt-9",
            b"principal": b"user:ana",
            b"attachment": b"\xff\xd8 binary, not mapped",
        },
        mapping,
    )
    assert message.content == "Ana prefers tea ☕"
    assert message.bank_id == "user-ana"
    assert message.tags == ("prefs", "drinks")
    assert message.metadata == {"channel": "chat", "user": "ana"}
    assert message.occurred_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert message.idempotency_key == "evt-9"
    assert message.principal == "user:ana"
    assert message.raw_ref == f"events:{ENTRY_ID}"


def test_payload_form_reads_a_json_object() -> None:
    payload = {
        "content": "hello",
        "bank_id": "b",
        "tags": ["x", "y"],
        "metadata": {"n": 1},
        "occurred_at": 1700000000,
    }
    message = decode_entry("events", ENTRY_ID, {b"payload": json.dumps(payload).encode()}, DEFAULT)
    assert (message.content, message.bank_id, message.tags) == ("hello", "b", ("x", "y"))
    assert message.metadata == {"n": 1}
    assert message.occurred_at == datetime.fromtimestamp(1700000000, tz=UTC)


def test_payload_form_falls_back_to_entry_fields() -> None:
    mapping = FieldMapping(metadata_fields=("user",))
    raw = {b"payload": b'{"content": "hi", "bank_id": "from-json"}', b"bank_id": b"ignored", b"user": b"ana"}
    message = decode_entry("events", ENTRY_ID, raw, mapping)
    assert (message.bank_id, message.metadata) == ("from-json", {"user": "ana"})


def test_defaults_key_from_stream_and_id_and_time_from_the_id() -> None:
    message = decode_entry("events", ENTRY_ID, {b"content": b"hi", b"tags": b'["a"]'}, DEFAULT)
    assert message.idempotency_key == f"events:{ENTRY_ID}"
    assert message.occurred_at == datetime.fromtimestamp(1700000000.123, tz=UTC)
    assert message.bank_id is None and message.tags == ("a",) and message.principal is None
    no_time = FieldMapping(occurred_at_from_entry_id=False)
    assert decode_entry("events", ENTRY_ID, {b"content": b"hi"}, no_time).occurred_at is None


def test_format_fields_ignores_a_payload_field() -> None:
    mapping = FieldMapping(format="fields")
    message = decode_entry("events", ENTRY_ID, {b"content": b"direct", b"payload": b"{not json"}, mapping)
    assert message.content == "direct"


@pytest.mark.parametrize(
    ("fields", "mapping", "code"),
    [
        ({b"content": b"\xff\xfe"}, DEFAULT, "entry_not_utf8"),
        ({b"payload": b'{"content": '}, DEFAULT, "payload_bad_json"),
        ({b"payload": b"[1, 2]"}, DEFAULT, "payload_not_object"),
        ({b"payload": b"\xc3\x28"}, DEFAULT, "entry_not_utf8"),
        ({b"content": b"x"}, FieldMapping(format="payload"), "payload_missing"),
        ({b"bank_id": b"b"}, DEFAULT, "content_missing"),
        ({b"payload": b'{"content": 5}'}, DEFAULT, "content_missing"),
        ({b"content": b"x", b"tags": b"[1, 2]"}, DEFAULT, "tags_invalid"),
        ({b"content": b"x", b"tags": b"[oops"}, DEFAULT, "tags_invalid"),
        ({b"content": b"x", b"metadata": b"[]"}, DEFAULT, "metadata_invalid"),
        ({b"content": b"x", b"metadata": b"{bad"}, DEFAULT, "metadata_invalid"),
        ({b"content": b"x", b"occurred_at": b"yesterday"}, DEFAULT, "occurred_at_invalid"),
        ({b"payload": b'{"content": "x", "bank_id": ["a"]}'}, DEFAULT, "bank_invalid"),
    ],
)
def test_poison_has_a_stable_code(fields: dict[bytes, bytes], mapping: FieldMapping, code: str) -> None:
    with pytest.raises(PoisonEntry) as caught:
        decode_entry("events", ENTRY_ID, fields, mapping)
    assert caught.value.code == code
