"""The per-mapping decoder the settler keeps: cached lookups give the same messages as before."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from astrocyte_ingestion_redis.config import FieldMapping
from astrocyte_ingestion_redis.decode import EntryDecoder, PoisonEntry, decode_entry, decoder_for


def test_one_decoder_per_distinct_mapping() -> None:
    assert decoder_for(FieldMapping()) is decoder_for(FieldMapping())
    assert decoder_for(FieldMapping(content="body")) is not decoder_for(FieldMapping())


def test_entry_times_follow_each_id_through_the_cache() -> None:
    decoder = EntryDecoder(FieldMapping())
    times = [
        decoder.decode("s", entry_id, {b"content": b"x"}).occurred_at
        for entry_id in (
            "1700000000123-0",
            "1700000000123-1",
            "1700000000124-0",
            "not-an-id",
            "1700000000123-2",
        )
    ]
    first = datetime.fromtimestamp(1700000000.123, tz=UTC)
    assert times == [first, first, datetime.fromtimestamp(1700000000.124, tz=UTC), None, first]


def test_unmapped_fields_are_ignored_and_a_bad_mapped_one_is_poison() -> None:
    mapping = FieldMapping(metadata_fields=("user",))
    raw = {b"blob": b"\xff", b"content": b"hi", b"user": b"ana", b"bank_id": b""}
    message = decode_entry("s", "1-0", raw, mapping)
    assert (message.content, message.metadata, message.bank_id) == ("hi", {"user": "ana"}, None)
    with pytest.raises(PoisonEntry) as caught:
        decode_entry("s", "1-0", {**raw, b"user": b"\xff"}, mapping)
    assert (caught.value.code, caught.value.reason) == ("entry_not_utf8", "field 'user' is not UTF-8")


def test_the_payload_field_is_never_read_as_a_part() -> None:
    mapping = FieldMapping(payload="content", format="fields")
    with pytest.raises(PoisonEntry) as caught:
        decode_entry("s", "1-0", {b"content": b"text"}, mapping)
    assert caught.value.code == "content_missing"
