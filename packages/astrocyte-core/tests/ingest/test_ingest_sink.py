"""The sink maps retain outcomes to stored / duplicate / rejected / failed, per message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from astrocyte.errors import AstrocyteError, ProviderUnavailableError, ValidationError
from astrocyte.ingest.principals import PrincipalPolicy
from astrocyte.ingest.sink import IngestMessage, IngestSink, Outcome, outcome_for_error
from astrocyte.types import AstrocyteContext, RetainRequest, RetainResult


def msg(
    key: str, content: str = "Alice prefers tea", bank: str | None = "ingest-bank", **kw: Any
) -> IngestMessage:
    return IngestMessage(idempotency_key=key, content=f"{content} ({key})", bank_id=bank, **kw)


async def test_stored_then_duplicate_on_redelivery(memory_brain) -> None:
    sink = IngestSink(memory_brain, source_id="s")
    [first] = await sink.submit([msg("k1")])
    [again] = await sink.submit([msg("k1")])
    assert first.status == "stored" and first.memory_id
    assert again == Outcome("duplicate", memory_id=first.memory_id)
    assert (await memory_brain.bank_stats("ingest-bank")).memory_count == 1


async def test_same_key_twice_in_one_batch_is_one_memory(memory_brain) -> None:
    sink = IngestSink(memory_brain, source_id="s")
    outcomes = await sink.submit([msg("k1"), msg("k2"), msg("k1"), msg("k1", bank="other-bank")])
    assert [o.status for o in outcomes] == ["stored", "stored", "duplicate", "stored"]
    assert outcomes[2].memory_id == outcomes[0].memory_id
    assert (await memory_brain.bank_stats("ingest-bank")).memory_count == 2


async def test_source_is_recorded_on_the_memory(memory_brain) -> None:
    sink = IngestSink(memory_brain, source_id="kafka-events")
    await sink.submit([msg("k1", content="the launch is on friday")])
    result = await memory_brain.recall("launch friday", bank_id="ingest-bank")
    assert result.hits and result.hits[0].source == "kafka-events"


async def test_bank_comes_from_message_then_template_then_default(memory_brain) -> None:
    sink = IngestSink(memory_brain, source_id="s", bank_id="fallback", bank_template="user-{user}")
    outcomes = await sink.submit(
        [
            msg("a", bank="explicit"),
            msg("b", bank=None, metadata={"user": "alice"}),
            msg("c", bank=None, metadata={"team": "x"}),
        ]
    )
    assert all(o.status == "stored" for o in outcomes)
    for bank in ("explicit", "user-alice", "fallback"):
        assert (await memory_brain.bank_stats(bank)).memory_count == 1


async def test_no_bank_and_no_key_are_rejected_permanently(memory_brain) -> None:
    sink = IngestSink(memory_brain, source_id="s")
    no_bank, no_key, ok = await sink.submit([msg("a", bank=None), msg(""), msg("b")])
    assert (no_bank.status, no_bank.code) == ("rejected", "bank_missing")
    assert (no_key.status, no_key.code) == ("rejected", "idempotency_key_missing")
    assert ok.status == "stored" and no_bank.settled and not Outcome.failed("x", "y").settled


async def test_invalid_bank_and_pii_are_rejected_with_their_codes(make_memory_brain) -> None:
    brain = make_memory_brain(barriers={"pii": {"action": "redact", "type_overrides": {"email": "reject"}}})
    async with brain:
        sink = IngestSink(brain, source_id="s")
        bad_bank, pii, fine = await sink.submit(
            [msg("a", bank="no spaces allowed"), msg("b", content="write to bob@example.com"), msg("c")]
        )
    assert (bad_bank.status, bad_bank.code) == ("rejected", "bank_id_invalid")
    assert (pii.status, pii.code) == ("rejected", "pii_rejected")
    assert "bob@example.com" not in (pii.reason or "")
    assert fine.status == "stored"


async def test_rate_limit_is_transient_with_retry_after(make_memory_brain) -> None:
    brain = make_memory_brain(limits={"rate": {"retain": {"per_second": 0.01, "burst": 1}}})
    async with brain:
        sink = IngestSink(brain, source_id="s")
        [first] = await sink.submit([msg("a")])
        [limited] = await sink.submit([msg("b")])
    assert first.status == "stored"
    assert (limited.status, limited.code) == ("failed", "rate_limited")
    assert limited.retry_after is not None and limited.retry_after > 0


ACCESS = {
    "access_control": {"enabled": True},
    "access_grants": [
        {"bank_id": "user-*", "principal": "service:ingest", "permissions": ["write"]},
        {"bank_id": "user-alice", "principal": "user:alice", "permissions": ["*"]},
    ],
}


async def test_messages_act_as_the_source_principal(make_memory_brain) -> None:
    async with make_memory_brain(**ACCESS) as brain:
        sink = IngestSink(brain, source_id="s", policy=PrincipalPolicy("s", "service:ingest"))
        allowed, denied = await sink.submit([msg("a", bank="user-bob"), msg("b", bank="team-x")])
    assert allowed.status == "stored"
    assert (denied.status, denied.code) == ("rejected", "access_denied")


async def test_untrusted_message_principal_is_rejected(make_memory_brain) -> None:
    async with make_memory_brain(**ACCESS) as brain:
        sink = IngestSink(brain, source_id="s", policy=PrincipalPolicy("s", "service:ingest"))
        [outcome] = await sink.submit([msg("a", bank="user-alice", principal="user:alice")])
    assert (outcome.status, outcome.code) == ("rejected", "principal_untrusted")


async def test_trusted_message_principal_narrows_but_never_widens(make_memory_brain) -> None:
    async with make_memory_brain(**ACCESS) as brain:
        policy = PrincipalPolicy("s", "service:ingest", ("user:*",))
        sink = IngestSink(brain, source_id="s", policy=policy)
        own, others, mallory = await sink.submit(
            [
                msg("a", bank="user-alice", principal="user:alice"),
                msg("b", bank="user-bob", principal="user:alice"),  # the service may, alice may not
                msg("c", bank="user-alice", principal="agent:mallory"),  # not in the allow-list
            ]
        )
    assert own.status == "stored"
    assert (others.status, others.code) == ("rejected", "access_denied")
    assert (mallory.status, mallory.code) == ("rejected", "principal_untrusted")


def test_principal_policy_contexts() -> None:
    policy = PrincipalPolicy("src", "service:ingest", ("user:*",))
    assert policy.context_for(None) == AstrocyteContext(principal="service:ingest", source="src")
    assert policy.context_for("user:al") == AstrocyteContext(
        "service:ingest", acting_for="user:al", source="src"
    )
    assert not policy.trusts("user: spaces") and not policy.trusts("userx")


class _Target:
    """Stands in for the engine to force whole-batch failures the engine cannot produce on demand."""

    def __init__(self, error: BaseException | None = None, bad_content: str | None = None) -> None:
        self.error, self.bad_content, self.calls = error, bad_content, 0

    async def retain_many(
        self, requests: Sequence[RetainRequest], *, context: AstrocyteContext | None = None
    ) -> list[RetainResult | AstrocyteError]:
        self.calls += 1
        if self.bad_content and (len(requests) > 1 or requests[0].content == self.bad_content):
            raise ValidationError("one request is malformed", code="bad_item")
        if self.error is not None:
            raise self.error
        return [RetainResult(stored=True, memory_id=f"m-{r.idempotency_key}") for r in requests]


async def test_unexpected_exception_fails_the_batch_transiently() -> None:
    sink = IngestSink(_Target(RuntimeError("socket closed")), source_id="s")
    outcomes = await sink.submit([msg("a"), msg("b")])
    assert [(o.status, o.code) for o in outcomes] == [("failed", "sink_error"), ("failed", "sink_error")]


async def test_unavailable_store_fails_the_batch_transiently() -> None:
    sink = IngestSink(_Target(ProviderUnavailableError("store down")), source_id="s")
    [outcome] = await sink.submit([msg("a")])
    assert (outcome.status, outcome.code) == ("failed", "provider_unavailable")


async def test_batch_wide_permanent_error_is_isolated_to_the_bad_message() -> None:
    target = _Target(bad_content="poison (b)")
    sink = IngestSink(target, source_id="s")
    outcomes = await sink.submit([msg("a"), msg("b", content="poison"), msg("c")])
    assert [o.status for o in outcomes] == ["stored", "rejected", "stored"]
    assert outcomes[1].code == "bad_item"


async def test_large_batches_are_split_and_observed() -> None:
    seen: list[tuple[int, float]] = []
    target = _Target()
    sink = IngestSink(target, source_id="s", max_batch=10, observer=lambda o, t: seen.append((len(o), t)))
    outcomes = await sink.submit([msg(str(i)) for i in range(25)])
    assert len(outcomes) == 25 and target.calls == 3
    assert seen and seen[0][0] == 25


def test_error_classification() -> None:
    assert outcome_for_error(ValidationError("x")).status == "rejected"
    assert outcome_for_error(AstrocyteError("internal")).status == "failed"
    assert outcome_for_error(KeyError("x")).status == "failed"
