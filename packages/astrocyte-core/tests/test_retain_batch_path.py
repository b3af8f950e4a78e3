"""The batched retain path's shortcuts keep today's results: memory ids, chunk vectors, records."""

from __future__ import annotations

import re
import uuid

import numpy as np
from astrocyte.brain import Astrocyte, _new_memory_ids
from astrocyte.errors import AstrocyteError
from astrocyte.types import AstrocyteContext, InsertOutcome, MemoryRecord, RetainRequest

UUID4_HEX = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")


def test_memory_ids_are_uuid4_hex_like_uuid4() -> None:
    ids = _new_memory_ids(2000)
    assert len(set(ids)) == 2000
    for memory_id in ids:
        assert UUID4_HEX.fullmatch(memory_id), memory_id
        parsed = uuid.UUID(hex=memory_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == memory_id
    assert _new_memory_ids(1)[0] != _new_memory_ids(1)[0]
    assert _new_memory_ids(0) == []


def test_memory_ids_use_every_random_bit() -> None:
    # 122 random bits per id: each is set in some ids and clear in others; the 6 fixed bits say
    # version 4 (digit 12 is 0b0100) and the RFC 4122 variant (digit 16 is 0b10xx).
    digits = np.array([[int(c, 16) for c in memory_id] for memory_id in _new_memory_ids(4000)])
    fixed = {(12, 0): 0, (12, 1): 0, (12, 2): 1, (12, 3): 0, (16, 2): 0, (16, 3): 1}
    for digit in range(32):
        for bit in range(4):
            values = set(((digits[:, digit] >> bit) & 1).tolist())
            assert values == ({fixed[digit, bit]} if (digit, bit) in fixed else {0, 1}), (digit, bit)


async def test_a_batch_hands_the_store_one_record_per_memory_with_its_own_vectors() -> None:
    captured: list[MemoryRecord] = []
    async with Astrocyte.from_dict({"store": "memory", "embedder": "hashing"}) as brain:

        async def insert(records: list[MemoryRecord]) -> list[InsertOutcome]:
            captured.extend(records)
            return [InsertOutcome(r.memory_id, False) for r in records]

        brain.store.insert = insert  # type: ignore[method-assign]
        long_text = " ".join(f"sentence {i} about the long memory." for i in range(200))  # many chunks
        requests = [
            RetainRequest(content="first memory", bank_id="b1", tags=("a",), metadata={"k": 1}),
            RetainRequest(content=long_text, bank_id="b2", source="src", idempotency_key="key-2"),
            RetainRequest(content="third memory", bank_id="b1"),
        ]
        results = await brain.retain_many(requests)
        assert [r.memory_id for r in results] == [r.memory_id for r in captured]  # type: ignore[union-attr]
        assert len({r.memory_id for r in captured}) == 3
        first, long_record, third = captured
        assert (first.tags, first.metadata, first.bank_id) == (("a",), {"k": 1}, "b1")
        assert (long_record.source, long_record.idempotency_key) == ("src", "key-2")
        assert len(long_record.chunks) > 1 and [c.index for c in long_record.chunks] == list(
            range(len(long_record.chunks))
        )
        assert first.retained_at == long_record.retained_at == third.retained_at
        texts = [c.text for record in captured for c in record.chunks]
        vectors = await brain.embedder.embed(texts)
        got = np.vstack([c.embedding for record in captured for c in record.chunks])
        np.testing.assert_array_equal(got, vectors)


async def test_bank_checks_run_once_per_bank_yet_fail_every_bad_item() -> None:
    config = {
        "store": "memory",
        "access_control": {"enabled": True},
        "access_grants": [{"bank_id": "ok-*", "principal": "service:ingest", "permissions": ["write"]}],
    }
    context = AstrocyteContext(principal="service:ingest")
    banks = ["ok-a", "bad bank", "ok-a", "denied", "bad bank", "denied", "ok-b", "ok-a"]
    async with Astrocyte.from_dict(config) as brain:
        outcomes = await brain.retain_many(
            [RetainRequest(content=f"memory {i}", bank_id=bank) for i, bank in enumerate(banks)],
            context=context,
        )
    codes = [o.code if isinstance(o, AstrocyteError) else "stored" for o in outcomes]
    assert codes == [
        "stored",
        "bank_id_invalid",
        "stored",
        "access_denied",
        "bank_id_invalid",
        "access_denied",
        "stored",
        "stored",
    ]
    errors = [o for o in outcomes if isinstance(o, AstrocyteError)]
    assert len({id(error) for error in errors}) == len(errors)  # each item its own error
