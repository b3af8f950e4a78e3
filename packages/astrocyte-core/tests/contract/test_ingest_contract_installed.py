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
    contract_harness_for,
    installed_ingest_drivers,
    run_check_or_skip,
)

INSTALLED = installed_ingest_drivers()


def _is_passive(key: str) -> bool:
    """Passive drivers (the gateway's webhook) have no transport for the kit to consume from."""
    try:
        return bool(getattr(INSTALLED[key].load(), "passive", False))
    except ImportError:
        return False  # kept, so the test below reports the broken install


CONSUMABLE = sorted(key for key in INSTALLED if not _is_passive(key))


def _load(key: str) -> type[Any]:
    try:
        return INSTALLED[key].load()  # type: ignore[no-any-return]
    except ImportError as exc:
        missing_service(f"ingest driver {key!r} is installed but cannot be imported ({exc}); missing extra?")


@pytest.mark.skipif(not CONSUMABLE, reason="no ingest driver packages are installed in this environment")
@pytest.mark.parametrize("key", CONSUMABLE)
async def test_installed_driver_supplies_a_contract_harness(key: str) -> None:
    await contract_harness_for(_load(key))


@pytest.mark.skipif(not CONSUMABLE, reason="no ingest driver packages are installed in this environment")
@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("key", CONSUMABLE)
@pytest.mark.timeout(300)
async def test_installed_driver_passes_the_contract(key: str, check: str) -> None:
    harness = await contract_harness_for(_load(key))
    await run_check_or_skip(harness, check)
