"""Kafka ingestion for Astrocyte: the ``kafka`` stream driver."""

from astrocyte_ingestion_kafka.config import KafkaSourceConfig, RecordMapping, Security
from astrocyte_ingestion_kafka.driver import KafkaStreamDriver

__all__ = ["KafkaSourceConfig", "KafkaStreamDriver", "RecordMapping", "Security"]
__version__ = "0.1.0"
