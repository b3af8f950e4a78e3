"""Prometheus metrics for the gateway, on a registry of its own (so several apps can live in one
process, as in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    """Request counters and latency per route template, and outcomes per core operation."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "astrocyte_gateway_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "astrocyte_gateway_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.operations = Counter(
            "astrocyte_gateway_operations_total",
            "Core operations called through the gateway, by outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def count_operation(self, operation: str, outcome: str) -> None:
        self.operations.labels(operation, outcome).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
