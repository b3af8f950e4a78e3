"""Record -> message mapping: JSON or text values, key/headers/timestamp, idempotency key sources,
and every kind of poison with its stable code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from astrocyte_ingestion_kafka.config import IdempotencyKey, RecordMapping
from astrocyte_ingestion_kafka.decode import PoisonRecord, RecordDecoder


@dataclass
class Rec:
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "events"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_000


def decoder(max_bytes: int = 10_000, key: IdempotencyKey | None = None, **mapping: object) -> RecordDecoder:
    return RecordDecoder(RecordMapping.model_validate(mapping), key or IdempotencyKey(), max_bytes)


def test_json_value_maps_every_part() -> None:
    value = {
        "content": "Alice prefers tea",
        "bank_id": "user-alice",
        "tags": ["pref"],
        "metadata": {"n": 1},
        "occurred_at": "2024-05-01T10:00:00Z",
        "principal": "user:alice",
    }
    message = decoder().decode(Rec(json.dumps(value).encode()))
    assert message.content == "Alice prefers tea" and message.bank_id == "user-alice"
    assert message.tags == ("pref",) and message.metadata == {"n": 1}
    assert message.occurred_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert message.principal == "user:alice"
    assert message.idempotency_key == message.raw_ref == "events:2:41"


def test_text_value_with_headers_key_and_timestamp() -> None:
    record = Rec(
        b"plain words",
        key=b"order-7",
        headers=[("bank_id", b"orders"), ("tags", b"a, b"), ("trace", b"\xff")],
    )
    message = decoder(metadata_headers=("bank_id",)).decode(record)
    assert message.content == "plain words" and message.bank_id == "orders" and message.tags == ("a", "b")
    assert message.occurred_at == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert message.metadata == {"bank_id": "orders"}  # the binary trace header was never decoded
    keyed = decoder(bank="@key").decode(record)
    assert keyed.bank_id == "order-7"


def test_idempotency_key_sources() -> None:
    record = Rec(b"x", key=b"k-1", headers=[("idem", b"h-1")])
    assert decoder(key=IdempotencyKey(source="key")).decode(record).idempotency_key == "k-1"
    header = IdempotencyKey(source="header", header="idem")
    assert decoder(key=header).decode(record).idempotency_key == "h-1"
    # A record without the chosen key falls back to its position (stable across redeliveries).
    assert decoder(key=IdempotencyKey(source="key")).decode(Rec(b"x")).idempotency_key == "events:2:41"


@pytest.mark.parametrize(
    ("record", "mapping", "code"),
    [
        (Rec(None), {}, "value_null"),
        (Rec(b"\xff\xfe not utf-8"), {}, "record_not_utf8"),
        (Rec(b'{"content": '), {}, "value_bad_json"),
        (Rec(b"plain"), {"value_format": "json"}, "value_bad_json"),
        (Rec(b"[1, 2]"), {"value_format": "json"}, "value_not_object"),
        (Rec(b'{"bank_id": "b"}'), {}, "content_missing"),
        (Rec(b"x" * 200), {}, "record_too_large"),
        (Rec(b"x", headers=[("bank_id", b"\xc3")]), {}, "record_not_utf8"),
        (Rec(b'{"content": "c", "tags": [1]}'), {}, "tags_invalid"),
        (Rec(b'{"content": "c", "occurred_at": "soon"}'), {}, "occurred_at_invalid"),
        (Rec(b'{"content": "c", "metadata": [1]}'), {}, "metadata_invalid"),
        (Rec(b'{"content": "c", "bank_id": {"a": 1}}'), {}, "bank_invalid"),
    ],
)
def test_poison_has_a_stable_code(record: Rec, mapping: dict[str, object], code: str) -> None:
    with pytest.raises(PoisonRecord) as caught:
        decoder(max_bytes=100, **mapping).decode(record)
    assert caught.value.code == code


def test_text_format_keeps_json_looking_values_as_text() -> None:
    assert decoder(value_format="text").decode(Rec(b'{"content": ')).content == '{"content": '
