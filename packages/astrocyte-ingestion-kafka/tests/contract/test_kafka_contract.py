"""The core's ingest driver contract kit, run against the kafka driver on the real test broker."""

from __future__ import annotations

import pytest
from astrocyte.testing import service_env
from astrocyte.testing.ingest_contract import IngestDriverContract, IngestHarness
from astrocyte_ingestion_kafka.testing import KafkaHarness


class TestKafkaDriverPassesTheContract(IngestDriverContract):
    contract_settings = KafkaHarness.contract_settings

    @pytest.fixture
    def harness(self) -> IngestHarness:
        return KafkaHarness(service_env("ASTROCYTE_TEST_KAFKA_BOOTSTRAP"))
