"""Prometheus metrics for engine operations.

Defined once per process at import, so any number of :class:`~astrocyte.brain.Astrocyte` instances
share them (a second registration of the same name would raise in ``prometheus_client``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import REGISTRY, Counter, Histogram

from astrocyte.errors import AstrocyteError

__all__ = ["OPERATIONS", "OPERATION_SECONDS", "instrumented"]

P = ParamSpec("P")
R = TypeVar("R")

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _registered(factory: Callable[[], Any], name: str) -> Any:
    try:
        return factory()
    except ValueError:  # already registered (module re-imported, e.g. by importlib.reload)
        return REGISTRY._names_to_collectors[name]


OPERATIONS = _registered(
    lambda: Counter(
        "astrocyte_operations_total",
        "Engine operations by outcome (ok, or the error code).",
        ["operation", "outcome"],
    ),
    "astrocyte_operations_total",
)
OPERATION_SECONDS = _registered(
    lambda: Histogram(
        "astrocyte_operation_duration_seconds",
        "Engine operation latency in seconds.",
        ["operation"],
        buckets=_BUCKETS,
    ),
    "astrocyte_operation_duration_seconds",
)


def instrumented(operation: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Count and time an async engine method; the outcome label is ``ok`` or the error code."""
    seconds = OPERATION_SECONDS.labels(operation)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            outcome = "ok"
            try:
                return await fn(*args, **kwargs)
            except AstrocyteError as exc:
                outcome = exc.code
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception:
                outcome = "internal"
                raise
            finally:
                seconds.observe(time.perf_counter() - started)
                OPERATIONS.labels(operation, outcome).inc()

        return wrapper

    return decorate
