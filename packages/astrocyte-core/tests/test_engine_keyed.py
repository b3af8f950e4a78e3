"""One memory per external object through the engine and the ingest sink: ``memory_key`` retains
replace, ``forget(memory_keys=...)`` deletes, and a store without the optional methods refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from astrocyte import Astrocyte
from astrocyte.errors import NotSupportedError, ValidationError
from astrocyte.ingest.sink import IngestMessage, IngestSink
from astrocyte.stores.memory import MemoryStore
from astrocyte.types import RetainRequest


@pytest.fixture(params=["memory", "sqlite"])
async def brain(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Astrocyte]:
    config: dict[str, Any] = {"store": request.param}
    if request.param == "sqlite":
        config["store_config"] = {"path": str(tmp_path / "keyed.db")}
    async with Astrocyte.from_dict(config) as engine:
        yield engine


async def test_a_new_version_replaces_the_memory_and_keeps_its_id(brain: Astrocyte) -> None:
    first = await brain.retain("the walrus sleeps", "b", idempotency_key="o@1", memory_key="o")
    second = await brain.retain("the narwhal swims", "b", idempotency_key="o@2", memory_key="o")
    again = await brain.retain("the narwhal swims", "b", idempotency_key="o@2", memory_key="o")
    assert (second.memory_id, second.deduplicated) == (first.memory_id, False)
    assert (again.memory_id, again.deduplicated) == (first.memory_id, True)
    assert (await brain.bank_stats("b")).memory_count == 1
    [hit] = (await brain.recall("narwhal", bank_id="b")).hits
    assert hit.text == "the narwhal swims"


async def test_forget_by_memory_keys(brain: Astrocyte) -> None:
    await brain.retain_many(
        [
            RetainRequest("issue one text", "b", idempotency_key="1@1", memory_key="1"),
            RetainRequest("issue two text", "b", idempotency_key="2@1", memory_key="2"),
            RetainRequest("a plain note", "b"),
        ]
    )
    assert (await brain.forget("b", memory_keys=["1"])).deleted_count == 1
    assert (await brain.bank_stats("b")).memory_count == 2
    with pytest.raises(ValidationError):
        await brain.forget("b", memory_keys=["2"], tags=["x"])
    with pytest.raises(ValidationError):
        await brain.forget("b", memory_keys=[])


async def test_the_sink_replaces_and_forgets_keyed_messages(brain: Astrocyte) -> None:
    sink = IngestSink(brain, source_id="src", bank_id="b")
    [stored] = await sink.submit([IngestMessage("k@1", "first version", memory_key="k")])
    [replaced] = await sink.submit([IngestMessage("k@2", "second version", memory_key="k")])
    assert replaced.status == "stored" and replaced.memory_id == stored.memory_id
    [gone] = await sink.submit([IngestMessage("k@deleted", "", memory_key="k", forget=True)])
    assert (gone.status, gone.code) == ("stored", "forgotten")
    assert (await brain.bank_stats("b")).memory_count == 0
    [nothing] = await sink.submit(
        [IngestMessage("z@deleted", "", bank_id="never", memory_key="z", forget=True)]
    )
    assert (nothing.status, nothing.code) == ("stored", "forgotten")


class _PlainStore(MemoryStore):
    """A third-party store without the optional keyed methods."""

    upsert_keyed = None  # type: ignore[assignment]
    forget_keys = None  # type: ignore[assignment]


async def test_a_store_without_keyed_methods_refuses_clearly() -> None:
    async with Astrocyte.from_dict({"store": "memory"}) as template:
        engine = Astrocyte(template.config, store=_PlainStore())
    async with engine:
        [result] = await engine.retain_many([RetainRequest("x", "b", idempotency_key="x@1", memory_key="x")])
        assert isinstance(result, NotSupportedError) and result.code == "memory_keys_not_supported"
        with pytest.raises(NotSupportedError):
            await engine.forget("b", memory_keys=["x"])
        [rejected] = await IngestSink(engine, source_id="s", bank_id="b").submit(
            [IngestMessage("x@1", "text", memory_key="x")]
        )
        assert (rejected.status, rejected.code) == ("rejected", "memory_keys_not_supported")
