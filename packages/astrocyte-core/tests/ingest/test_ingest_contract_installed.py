"""Runs the ingest driver contract kit against every driver installed in the
``astrocyte.ingest_stream_drivers`` and ``astrocyte.ingest_poll_drivers`` entry-point groups.

A driver supplies its harness through the ``contract_harness`` classmethod (see
:mod:`astrocyte.testing.ingest_contract`). A driver that is installed but cannot be imported, or
whose harness needs a service that is not configured, skips locally and fails under ``CI``.
"""

from __future__ import annotations

from typing import Any

import pytest
from astrocyte.testing._helpers import missing_service
from astrocyte.testing.ingest_contract import (
    CHECKS,
    ContractViolation,
    contract_harness_for,
    installed_ingest_drivers,
    run_check,
)
from ingest_reference_driver import QueueDriver, QueueHarness
from ingest_test_drivers import FlakyDriver

INSTALLED = installed_ingest_drivers()


def _load(key: str) -> type[Any]:
    try:
        return INSTALLED[key].load()  # type: ignore[no-any-return]
    except ImportError as exc:
        missing_service(f"ingest driver {key!r} is installed but cannot be imported ({exc}); missing extra?")


@pytest.mark.skipif(not INSTALLED, reason="no ingest driver packages are installed in this environment")
@pytest.mark.parametrize("key", sorted(INSTALLED))
async def test_installed_driver_supplies_a_contract_harness(key: str) -> None:
    await contract_harness_for(_load(key))


@pytest.mark.skipif(not INSTALLED, reason="no ingest driver packages are installed in this environment")
@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("key", sorted(INSTALLED))
@pytest.mark.timeout(300)
async def test_installed_driver_passes_the_contract(key: str, check: str) -> None:
    harness = await contract_harness_for(_load(key))
    await run_check(harness, check)


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
    from astrocyte.ingest.webhook import WebhookDriver

    with pytest.raises(pytest.skip.Exception, match="passive"):
        await contract_harness_for(WebhookDriver)
