"""Prometheus metrics for ingestion, registered once per registry.

The gateway and the ``astrocyte-ingest`` worker may both build a supervisor in one process (and
tests build many); :func:`ingest_metrics` returns the same collectors for the same registry
instead of failing with "Duplicated timeseries".
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LOCK = threading.Lock()
# Keyed by the registry itself, weakly: an ``id()`` is reused by a registry made after another was
# collected, which then got the dead one's collectors and exported nothing (a test's registry, or
# an app rebuilt with a new one); and a dead registry's entry goes with it.
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, IngestMetrics] = weakref.WeakKeyDictionary()

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class IngestMetrics:
    """The ingestion collectors. Labels: ``source`` (source id), ``outcome``."""

    messages: Counter  # astrocyte_ingest_messages_total{source,outcome}
    restarts: Counter  # astrocyte_ingest_driver_restarts_total{source}
    lag: Gauge  # astrocyte_ingest_lag{source}
    pending: Gauge  # astrocyte_ingest_pending{source}
    up: Gauge  # astrocyte_ingest_source_up{source}: 1 when running
    batch_seconds: Histogram  # astrocyte_ingest_batch_seconds{source}
    events: Counter  # astrocyte_ingest_driver_events_total{source,event}: what DriverHealth.events counts

    def record_outcomes(self, source_id: str, statuses: Iterable[str]) -> None:
        counts: dict[str, int] = {}
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
        for status, count in counts.items():
            self.messages.labels(source=source_id, outcome=status).inc(count)


def ingest_metrics(registry: CollectorRegistry | None = None) -> IngestMetrics:
    """The ingestion collectors registered in ``registry`` (default: the global registry)."""
    registry = registry if registry is not None else REGISTRY
    with _LOCK:
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = _create(registry)
        return found


def _create(registry: CollectorRegistry) -> IngestMetrics:
    return IngestMetrics(
        messages=_get_or_make(
            registry,
            Counter,
            "astrocyte_ingest_messages",
            "Ingested messages by source and sink outcome.",
            ["source", "outcome"],
        ),
        restarts=_get_or_make(
            registry,
            Counter,
            "astrocyte_ingest_driver_restarts",
            "Driver restarts after a crash.",
            ["source"],
        ),
        lag=_get_or_make(
            registry,
            Gauge,
            "astrocyte_ingest_lag",
            "Entries behind the transport head, as the driver reports it.",
            ["source"],
        ),
        pending=_get_or_make(
            registry,
            Gauge,
            "astrocyte_ingest_pending",
            "Entries delivered but not yet acknowledged.",
            ["source"],
        ),
        up=_get_or_make(
            registry,
            Gauge,
            "astrocyte_ingest_source_up",
            "1 when the source's driver is running, else 0.",
            ["source"],
        ),
        batch_seconds=_get_or_make(
            registry,
            Histogram,
            "astrocyte_ingest_batch_seconds",
            "Time the sink took per batch.",
            ["source"],
            buckets=BATCH_BUCKETS,
        ),
        events=_get_or_make(
            registry,
            Counter,
            "astrocyte_ingest_driver_events",
            "Notable transport events a driver reported (group recreated, stream lost, ...).",
            ["source", "event"],
        ),
    )


def _get_or_make(
    registry: CollectorRegistry, kind: type, name: str, doc: str, labels: list[str], **kwargs: object
) -> Any:
    try:
        return kind(name, doc, labels, registry=registry, **kwargs)
    except ValueError:
        # Someone (an older import of this module, a reload in tests) registered it already.
        existing = registry._names_to_collectors.get(name) or registry._names_to_collectors.get(
            f"{name}_total"
        )
        if existing is None or not isinstance(existing, kind):
            raise
        return existing
