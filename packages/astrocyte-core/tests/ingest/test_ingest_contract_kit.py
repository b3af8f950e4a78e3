"""The contract kit passes a correct driver and fails loudly on broken ones."""

from __future__ import annotations

import pytest
from astrocyte.testing.ingest_contract import (
    CHECKS,
    ContractSettings,
    ContractViolation,
    HookNotSupported,
    IngestDriverContract,
    IngestHarness,
    run_check,
    run_ingest_contract,
)
from ingest_reference_driver import (
    AckFirstDriver,
    DeadLetterFirstDriver,
    DeadLettersAgainDriver,
    DropPoisonDriver,
    DropsPartlyFailedDriver,
    HooklessHarness,
    NoDrainDriver,
    QueueHarness,
    SilentPoisonDriver,
)

FAST = ContractSettings(timeout=10.0, messages=40, failure_seconds=0.8, sink_latency=0.2)
# Broken drivers fail by timing out while waiting for lost messages: keep that wait short.
BROKEN = ContractSettings(timeout=4.0, messages=20, failure_seconds=0.8, sink_latency=0.2)


class TestReferenceDriverPassesTheKit(IngestDriverContract):
    contract_settings = FAST

    @pytest.fixture
    def harness(self) -> IngestHarness:
        return QueueHarness()


async def test_run_ingest_contract_passes_reference_driver() -> None:
    await run_ingest_contract(
        QueueHarness(), FAST, checks=["exactly_once_across_restart", "poison_dead_lettered"]
    )


async def test_kit_catches_a_driver_that_acks_before_the_sink_answers() -> None:
    with pytest.raises(ContractViolation, match="backpressure: .*lost"):
        await run_check(QueueHarness(AckFirstDriver), "backpressure", BROKEN)


async def test_kit_catches_a_driver_that_drops_poison_silently() -> None:
    with pytest.raises(
        ContractViolation, match="poison_dead_lettered: .*not dead-lettered: bad_json, undecodable"
    ):
        await run_check(QueueHarness(DropPoisonDriver), "poison_dead_lettered", BROKEN)


async def test_kit_catches_a_driver_that_does_not_report_poison_to_the_sink() -> None:
    with pytest.raises(
        ContractViolation, match="dead letters not counted once .*bad_json x0, undecodable x0"
    ):
        await run_check(QueueHarness(SilentPoisonDriver), "poison_dead_lettered", BROKEN)


async def test_kit_catches_a_driver_that_does_not_drain_on_stop() -> None:
    with pytest.raises(ContractViolation, match="stop_drains: .*did not drain"):
        await run_check(QueueHarness(NoDrainDriver), "stop_drains", BROKEN)


async def test_run_ingest_contract_lists_every_failed_check() -> None:
    with pytest.raises(ContractViolation) as caught:
        await run_ingest_contract(
            QueueHarness(DropPoisonDriver), BROKEN, checks=["poison_dead_lettered", "health_states"]
        )
    text = str(caught.value)
    assert "ingest driver contract failed" in text and "poison_dead_lettered" in text
    assert "health_states" not in text


async def test_kit_catches_a_driver_that_commits_a_half_failed_batch() -> None:
    with pytest.raises(ContractViolation, match="partial_batch_failure: .*lost"):
        await run_check(QueueHarness(DropsPartlyFailedDriver), "partial_batch_failure", BROKEN)


async def test_kit_catches_a_driver_whose_dead_letter_failure_holds_back_valid_messages() -> None:
    with pytest.raises(
        ContractViolation,
        match="dead_letter_failure_loses_nothing: .*valid messages stored while the dead-letter destination fails",
    ):
        await run_check(QueueHarness(DeadLetterFirstDriver), "dead_letter_failure_loses_nothing", BROKEN)


async def test_kit_catches_a_driver_that_dead_letters_a_replayed_entry_again() -> None:
    with pytest.raises(
        ContractViolation,
        match="dead_letter_once_on_replay: after a replay: dead-lettered more than once: bad_json x2, "
        "missing_bank x2, rejected_by_sink x2, undecodable x2",
    ):
        await run_check(QueueHarness(DeadLettersAgainDriver), "dead_letter_once_on_replay", BROKEN)


async def test_a_harness_without_the_optional_hooks_skips_only_their_checks() -> None:
    with pytest.raises(HookNotSupported):
        await run_check(HooklessHarness(), "dead_letter_once_on_replay", FAST)
    skipped = await run_ingest_contract(HooklessHarness(), FAST)
    assert skipped == ["dead_letter_failure_loses_nothing", "dead_letter_once_on_replay"]
    assert set(skipped) < set(CHECKS)
