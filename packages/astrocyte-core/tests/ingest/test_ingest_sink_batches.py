"""A mixed batch: each principal resolved once, requests grouped by the context they act under."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from astrocyte.errors import AstrocyteError
from astrocyte.ingest.principals import PrincipalPolicy
from astrocyte.ingest.sink import IngestMessage, IngestSink
from astrocyte.types import AstrocyteContext, RetainRequest, RetainResult


class Recorder:
    """Records every retain_many call and stores everything."""

    def __init__(self) -> None:
        self.calls: list[tuple[AstrocyteContext | None, list[RetainRequest]]] = []

    async def retain_many(
        self, requests: Sequence[RetainRequest], *, context: AstrocyteContext | None = None
    ) -> list[RetainResult | AstrocyteError]:
        self.calls.append((context, list(requests)))
        return [RetainResult(stored=True, memory_id=f"m-{r.idempotency_key}") for r in requests]


async def test_principals_are_resolved_once_and_grouped_by_context() -> None:
    target = Recorder()
    sink = IngestSink(target, source_id="src", policy=PrincipalPolicy("src", "service:ingest", ("user:*",)))
    principals = [None, "user:a", "agent:x", "service:ingest", "user:b", "user:a", "agent:x", None]
    batch = [IngestMessage(f"k{i}", f"text {i}", "bank", principal=p) for i, p in enumerate(principals)]
    outcomes = await sink.submit(batch)
    assert [(o.status, o.code) for o in outcomes] == [
        ("stored", None),
        ("stored", None),
        ("rejected", "principal_untrusted"),
        ("stored", None),
        ("stored", None),
        ("stored", None),
        ("rejected", "principal_untrusted"),
        ("stored", None),
    ]
    assert [o.memory_id for o in outcomes if o.status == "stored"] == [f"m-k{i}" for i in (0, 1, 3, 4, 5, 7)]
    calls = {context: [r.idempotency_key for r in requests] for context, requests in target.calls}
    own = AstrocyteContext(principal="service:ingest", source="src")
    assert calls == {
        own: ["k0", "k3", "k7"],  # no principal, and the source's own principal: the same context
        AstrocyteContext("service:ingest", acting_for="user:a", source="src"): ["k1", "k5"],
        AstrocyteContext("service:ingest", acting_for="user:b", source="src"): ["k4"],
    }


async def test_requests_carry_every_message_field() -> None:
    target = Recorder()
    sink = IngestSink(target, source_id="src")
    metadata = {"channel": "chat"}
    when = datetime(2024, 5, 1, tzinfo=UTC)
    message = IngestMessage("key", "content", "bank", metadata, ["a", "b"], when, raw_ref="s:1-0")
    await sink.submit([message])
    [(_, [request])] = target.calls
    assert request == RetainRequest(
        content="content",
        bank_id="bank",
        metadata={"channel": "chat"},
        tags=("a", "b"),
        occurred_at=when,
        source="src",
        idempotency_key="key",
    )
    assert request.metadata is not metadata  # a copy: the engine may not change the message
