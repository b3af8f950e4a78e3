"""The contract kit's discovery hook: ``contract_harness`` resolution, passive drivers, skips."""

from __future__ import annotations

import pytest
from astrocyte.ingest.webhook import WebhookDriver
from astrocyte.testing.ingest_contract import ContractViolation, contract_harness_for
from ingest_reference_driver import QueueDriver, QueueHarness
from ingest_test_drivers import FlakyDriver


async def test_discovery_hook_resolves_a_harness() -> None:
    harness = await contract_harness_for(QueueDriver)
    assert isinstance(harness, QueueHarness) and harness.driver_class is QueueDriver


async def test_driver_without_the_hook_fails_discovery() -> None:
    with pytest.raises(ContractViolation, match="has no contract_harness"):
        await contract_harness_for(FlakyDriver)


async def test_hook_answering_none_skips_for_a_missing_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)

    class Unconfigured(QueueDriver):
        @classmethod
        async def contract_harness(cls) -> None:
            return None

    with pytest.raises(pytest.skip.Exception, match="not configured"):
        await contract_harness_for(Unconfigured)


async def test_passive_drivers_are_skipped() -> None:
    with pytest.raises(pytest.skip.Exception, match="passive"):
        await contract_harness_for(WebhookDriver)
