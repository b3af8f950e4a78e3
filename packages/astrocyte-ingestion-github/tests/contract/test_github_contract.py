"""The core's ingest driver contract kit (poll form), run against the github driver on a local
GitHub-API-compatible server."""

from __future__ import annotations

import pytest
from astrocyte.testing.ingest_contract import ContractSettings, IngestDriverContract, IngestHarness
from astrocyte_ingestion_github.testing import GitHubHarness


class TestGitHubDriverPassesTheContract(IngestDriverContract):
    contract_settings = ContractSettings(timeout=30.0)

    @pytest.fixture
    def harness(self) -> IngestHarness:
        return GitHubHarness()
