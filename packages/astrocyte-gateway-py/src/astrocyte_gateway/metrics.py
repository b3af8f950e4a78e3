"""Prometheus metrics for the gateway, on a registry of its own (so several apps can live in one
process, as in tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server

if TYPE_CHECKING:
    from astrocyte_gateway.runtime import GatewayRuntime

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

        # Label children cached per label set: ``labels()`` takes a lock and builds a tuple each call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._operation_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            if len(self._children) < 10_000:  # label sets are bounded by routes, but stay safe
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_operation(self, operation: str, outcome: str) -> None:
        child = self._operation_children.get((operation, outcome))
        if child is None:
            child = self._operation_children[(operation, outcome)] = self.operations.labels(
                operation, outcome
            )
        child.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def serve_metrics(runtime: GatewayRuntime) -> Callable[[], None]:
    """Serve the registry on ``ASTROCYTE_METRICS_HOST:ASTROCYTE_METRICS_PORT`` (a listener of its
    own, for an internal network); returns the function that stops it."""
    settings = runtime.settings
    assert settings.metrics_port is not None
    server, thread = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=runtime.metrics.registry
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
