"""The contract kit passes a correct driver and fails loudly on broken ones."""

from __future__ import annotations

import pytest
from astrocyte.testing.ingest_contract import (
    ContractSettings,
    ContractViolation,
    IngestDriverContract,
    IngestHarness,
    run_check,
    run_ingest_contract,
)
from ingest_reference_driver import AckFirstDriver, DropPoisonDriver, NoDrainDriver, QueueHarness

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
