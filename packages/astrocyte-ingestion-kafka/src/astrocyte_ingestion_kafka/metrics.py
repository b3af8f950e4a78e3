"""Kafka-specific Prometheus collectors, beside the core's per-source ingest metrics (outcomes,
lag, batch time), registered through the core's metrics module so two drivers in one process (the
gateway and tests build many) share them instead of failing with "Duplicated timeseries"."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from astrocyte.ingest.metrics import _get_or_make
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class KafkaMetrics:
    records: Counter  # astrocyte_kafka_records_total{source,topic}: records read
    outcomes: (
        Counter  # astrocyte_kafka_outcomes_total{source,outcome}: stored|duplicate|dead_lettered|retried
    )
    lag: Gauge  # astrocyte_kafka_partition_lag{source,topic,partition}
    commit_seconds: Histogram  # astrocyte_kafka_commit_seconds{source}


@cache
def kafka_metrics() -> KafkaMetrics:
    """The collectors, in the default registry (the one the gateway and the worker serve)."""
    return KafkaMetrics(
        records=_get_or_make(
            REGISTRY, Counter, "astrocyte_kafka_records", "Kafka records read.", ["source", "topic"]
        ),
        outcomes=_get_or_make(
            REGISTRY,
            Counter,
            "astrocyte_kafka_outcomes",
            "Kafka records settled, by outcome (stored, duplicate, dead_lettered) and sink retries.",
            ["source", "outcome"],
        ),
        lag=_get_or_make(
            REGISTRY,
            Gauge,
            "astrocyte_kafka_partition_lag",
            "Records between the committed offset and the partition's high watermark.",
            ["source", "topic", "partition"],
        ),
        commit_seconds=_get_or_make(
            REGISTRY,
            Histogram,
            "astrocyte_kafka_commit_seconds",
            "Time an offset commit took.",
            ["source"],
            buckets=COMMIT_BUCKETS,
        ),
    )
