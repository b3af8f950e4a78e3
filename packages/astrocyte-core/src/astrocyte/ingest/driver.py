"""The driver protocol every ingest transport implements, and how drivers are found.

A driver is built as ``DriverClass(source_id, config, *, sink)`` where ``config`` is what the
class's own ``validate_config`` returned for the source's driver keys. It reads its transport,
turns entries into :class:`~astrocyte.ingest.sink.IngestMessage`, hands batches to the sink and
acknowledges an entry only after the sink answered ``stored``, ``duplicate`` or ``rejected``
(rejected entries go to the driver's dead-letter destination first).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import pydantic
from pydantic import BaseModel, ConfigDict

from astrocyte.errors import ConfigError
from astrocyte.providers import POLL_DRIVERS, STREAM_DRIVERS, load_class

SourceType = Literal["stream", "poll"]
DriverState = Literal["starting", "running", "degraded", "failed", "stopped"]

ENTRY_POINT_GROUPS: dict[str, str] = {"stream": STREAM_DRIVERS, "poll": POLL_DRIVERS}


@dataclass(slots=True)
class DriverHealth:
    """What a driver says about itself.

    ``state``: ``starting`` (connecting), ``running`` (consuming), ``degraded`` (transport down or
    sink failing; the driver keeps retrying on its own), ``failed`` (fatal: the driver cannot go on
    and the supervisor should rebuild it), ``stopped``. ``lag``: entries behind the head of the
    transport when known; ``pending``: entries delivered but not yet acknowledged. ``events``:
    running totals of notable transport events since this driver instance started (for example
    ``{"group_recreated": 1}``); the supervisor exports the increments as
    ``astrocyte_ingest_driver_events_total{source, event}``. Drivers that have none leave it empty.
    """

    state: DriverState
    lag: int | None = None
    pending: int | None = None
    detail: str | None = None
    events: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["events"] = dict(self.events)
        return body


@runtime_checkable
class Driver(Protocol):
    """An ingest driver (one per configured source)."""

    source_id: str
    source_type: ClassVar[SourceType]

    async def start(self) -> None:
        """Begin consuming. May return once background work is running, or run until stopped;
        the supervisor runs it as a task either way and treats an exception as a crash."""
        ...

    async def stop(self, deadline: float) -> None:
        """Stop reading, let in-flight batches finish and acknowledge them, within ``deadline``
        seconds from now; whatever is still unacknowledged then is left for redelivery."""
        ...

    async def health(self) -> DriverHealth: ...


class DriverConfig(BaseModel):
    """Base for driver config schemas: unknown keys are an error, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


def validate_model(model: type[ModelT], mapping: Mapping[str, Any]) -> ModelT:
    """Validate ``mapping`` against ``model``; raise :class:`ConfigError` naming the first bad key.

    Drivers call this from ``validate_config`` so their errors look like everyone else's. The key
    path (dotted, relative to the mapping) is in ``error.details["path"]``.
    """
    try:
        return model.model_validate(dict(mapping))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise ConfigError(f"{path}: {first['msg']}", details={"path": path}) from exc


def load_driver_class(source_type: SourceType, name: str) -> type[Any]:
    """Resolve a driver by entry-point name in the group for ``source_type``, or a ``module:Class``."""
    cls = load_class(ENTRY_POINT_GROUPS[source_type], name)
    declared = getattr(cls, "source_type", None)
    if declared not in ("stream", "poll"):
        raise ConfigError(
            f"driver {name!r} does not declare source_type 'stream' or 'poll'", code="provider_not_found"
        )
    if declared != source_type:
        raise ConfigError(f"driver {name!r} is a {declared} driver, not a {source_type} driver")
    if not callable(getattr(cls, "validate_config", None)):
        raise ConfigError(f"driver {name!r} has no validate_config classmethod", code="provider_not_found")
    return cls


class DriverStopping(Exception):
    """Raised by :func:`until_stopped` when the driver stops before the awaited work is done."""


async def until_stopped(awaitable: Awaitable[T], stopping: asyncio.Event) -> T:
    """Await ``awaitable`` unless ``stopping`` is set first: then cancel it (waiting for the
    cancellation to finish) and raise :class:`DriverStopping`. For a driver's loops, so ``stop()``
    never waits on a blocking read, a sleep or a slot."""
    if stopping.is_set():
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise DriverStopping
    work = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
    if work.cancelled():
        raise DriverStopping
    return work.result()
