"""The ingest driver contract kit: every driver package must pass it.

A driver package implements :class:`IngestHarness` (publish to the transport, build a driver on it,
read its dead-letter destination, break and restore the transport) and runs the checks, either
all at once::

    await run_ingest_contract(MyHarness())

or as pytest tests, by subclassing :class:`IngestDriverContract` and providing a ``harness``
fixture. The checks use an in-memory :class:`ContractSink` that behaves like the real sink (it
deduplicates on ``(bank, idempotency key)``, rejects a message with no bank, and rejects any message
whose content starts with :data:`REJECT_PREFIX`). Messages are identified by their content, so a
driver may derive idempotency keys from transport positions. Every check is bounded in time and
raises :class:`ContractViolation` (an ``AssertionError``) saying what the driver did wrong.

**Discovery hook.** The core's ``contracts`` session runs the kit against *every* driver installed
in the ``astrocyte.ingest_stream_drivers`` and ``astrocyte.ingest_poll_drivers`` entry-point
groups. A driver takes part by defining a classmethod ``contract_harness() -> IngestHarness |
None`` (may be ``async``). Return ``None`` when the transport's test service is not configured
(for example ``ASTROCYTE_TEST_REDIS_URL`` unset): the tests then skip locally and fail under
``CI``. :func:`contract_harness_for` and :func:`installed_ingest_drivers` resolve this. A
*passive* driver (``passive = True``, like the webhook driver the gateway feeds) is skipped.

What the kit pins down beyond the protocol's docstrings:

- ``health()`` reports ``degraded`` (never ``failed``) while the transport is unreachable, and
  ``running`` again once it is back, without a rebuild; ``stopped`` after ``stop()``.
- ``start()`` may return at once or run until stopped, but it must not outlive ``stop()``.
- A batch that finished during ``stop()`` is acknowledged: a new instance does not see it again.
- Idempotency keys of a redelivered entry are the same as the first delivery's.
- A sink that fails only some messages of a batch (``failed`` next to ``stored`` and ``rejected``)
  costs nothing: the driver retries what failed, and every valid message is stored exactly once
  (check ``partial_batch_failure``; needs no hook).
- A dead-letter destination that fails mid-batch never costs a valid message: valid messages of
  the batch are stored *while* the dead-letter writes fail, and once the destination is back each
  poison entry lands there exactly once (check ``dead_letter_failure_loses_nothing``; hook
  :meth:`IngestHarness.break_dead_letters` / :meth:`IngestHarness.restore_dead_letters`).
- A message already dead-lettered is never dead-lettered again, whatever re-delivers it (a consumer
  group recreated, offsets reset, a cursor forgotten, a claim): the driver must recognise it
  (check ``dead_letter_once_on_replay``; hook :meth:`IngestHarness.replay`).

**Optional harness hooks** (added after the first release; a harness that does not override one
raises :class:`HookNotSupported` from it, and the check that needs it is *skipped*, not failed —
stream drivers are expected to implement both):

- ``async replay()``: make the transport deliver every entry of the current namespace again, as if
  nothing had been acknowledged (Redis: ``XGROUP DESTROY``, the driver recreates the group at its
  start id; Kafka: reset the group's committed offsets to the earliest; a poll driver: forget the
  persisted cursor). Called while no driver instance runs.
- ``async break_dead_letters()`` / ``async restore_dead_letters()``: make writes to the dead-letter
  destination fail (and undo it) while the transport itself keeps working (Redis: put a key of the
  wrong type where the dead-letter stream goes; Kafka: deny the producer on the DLQ topic).
  Called while a driver runs and reports ``running``.

:func:`run_ingest_contract` returns the names of the checks it skipped for a missing hook.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

from astrocyte.ingest.driver import ENTRY_POINT_GROUPS, Driver
from astrocyte.ingest.sink import IngestMessage, Outcome, Sink
from astrocyte.testing._helpers import missing_service

REJECT_PREFIX = "contract-reject:"
POISON_KINDS: tuple[str, ...] = ("undecodable", "bad_json", "missing_bank")
STOP_GRACE_SECONDS = 2.0


class ContractViolation(AssertionError):
    """The driver broke the ingest contract."""


class HookNotSupported(NotImplementedError):
    """The harness does not implement an optional hook; the check that needs it is skipped."""


@dataclass(frozen=True, slots=True)
class ContractMessage:
    """A valid message the harness encodes in its transport's usual form."""

    content: str
    bank_id: str = "contract-bank"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContractSettings:
    """Bounds of the checks. ``timeout``: the most one check may take."""

    timeout: float = 30.0
    messages: int = 60
    failure_seconds: float = 1.5
    max_calls_while_failing: int = 300  # a driver without backoff makes thousands
    stop_deadline: float = 5.0
    sink_latency: float = 0.3


class IngestHarness(abc.ABC):
    """What a driver package provides so the kit can drive its transport.

    ``setup`` gives each check a fresh transport namespace (new stream/topic, new consumer group);
    ``build_driver`` returns a *new* driver instance on that namespace each call (a restart), with
    no default bank configured (so a message without a bank is rejected by the sink).
    """

    poison_kinds: ClassVar[tuple[str, ...]] = POISON_KINDS
    contract_settings: ClassVar[ContractSettings] = ContractSettings()  # used when a run names none

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Prepare a fresh namespace; called before each check."""

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release what ``setup`` made; called after each check, also when it failed."""

    @abc.abstractmethod
    def build_driver(self, sink: Sink) -> Driver:
        """A new driver instance reading the current namespace and writing into ``sink``."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[ContractMessage]) -> list[str]:
        """Publish valid messages; return each one's transport reference (as dead letters report it)."""

    @abc.abstractmethod
    async def publish_poison(self, kind: str) -> str:
        """Publish one poison entry of ``kind`` (see :data:`POISON_KINDS`): ``undecodable`` (not
        UTF-8), ``bad_json`` (the payload does not parse), ``missing_bank`` (well-formed, no bank).
        Return its transport reference."""

    @abc.abstractmethod
    async def dead_letter_refs(self) -> list[str]:
        """The transport references of every dead-letter entry, one per entry (repeats kept)."""

    @abc.abstractmethod
    async def break_transport(self) -> None:
        """Make the transport unreachable for the driver (stop the server, block the port, ...)."""

    @abc.abstractmethod
    async def restore_transport(self) -> None:
        """Undo :meth:`break_transport`."""

    # -- optional hooks (see the module docstring); the defaults say "not supported" ------------

    async def replay(self) -> None:
        """Make the transport redeliver every entry of the namespace, as if none was acknowledged
        (no driver runs meanwhile)."""
        raise HookNotSupported("replay")

    async def break_dead_letters(self) -> None:
        """Make writes to the dead-letter destination fail; the transport keeps working."""
        raise HookNotSupported("break_dead_letters")

    async def restore_dead_letters(self) -> None:
        """Undo :meth:`break_dead_letters`."""
        raise HookNotSupported("restore_dead_letters")


class ContractSink:
    """An in-memory sink with the real sink's semantics, recording everything."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.gate = asyncio.Event()
        self.gate.set()
        self.memories: dict[tuple[str, str], IngestMessage] = {}
        self.stored_contents: Counter[str] = Counter()
        self.duplicate_contents: Counter[str] = Counter()
        self.keys_by_content: dict[str, set[str]] = {}
        self.reported_dead_letters: Counter[str] = Counter()  # raw_ref -> report_dead_lettered calls
        self.rejected_refs: Counter[str] = Counter()  # raw_ref -> rejections answered
        self.started = self.finished = self.cancelled = 0

    def record_dead_lettered(self, raw_ref: str, code: str, reason: str) -> None:
        """What :func:`astrocyte.ingest.sink.report_dead_lettered` calls (``poison_dead_lettered``
        checks each poison entry is reported exactly once)."""
        self.reported_dead_letters[raw_ref] += 1

    @property
    def in_flight(self) -> int:
        return self.started - self.finished - self.cancelled

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]:
        self.started += 1
        try:
            await self.gate.wait()
            if self.latency:
                await asyncio.sleep(self.latency)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        outcomes = [self._apply(message) for message in batch]
        self.finished += 1
        return outcomes

    def _apply(self, message: IngestMessage) -> Outcome:
        if not message.bank_id:
            return self._reject(message, "bank_missing", "no bank")
        if message.content.startswith(REJECT_PREFIX):
            return self._reject(message, "contract_rejected", "rejected by the contract sink")
        key = (message.bank_id, message.idempotency_key)
        self.keys_by_content.setdefault(message.content, set()).add(message.idempotency_key)
        if key in self.memories:
            self.duplicate_contents[message.content] += 1
            return Outcome("duplicate", memory_id=str(key))
        self.memories[key] = message
        self.stored_contents[message.content] += 1
        return Outcome("stored", memory_id=str(key))

    def _reject(self, message: IngestMessage, code: str, reason: str) -> Outcome:
        self.rejected_refs[message.raw_ref or ""] += 1  # counted by the sink, as the real one does
        return Outcome.rejected(code, reason)


class FlakySink:
    """Wraps a sink and answers ``failed`` (transient) for whole batches while failing: for the
    first ``fail_first`` calls, and/or for ``fail_for_seconds`` after the first call."""

    def __init__(
        self,
        inner: Sink,
        *,
        fail_first: int = 0,
        fail_for_seconds: float = 0.0,
        code: str = "provider_unavailable",
    ) -> None:
        self.inner = inner
        self._fail_first = fail_first
        self._fail_for = fail_for_seconds
        self._code = code
        self._first_call: float | None = None
        self.calls = 0
        self.failed_calls = 0

    def failing(self) -> bool:
        now = time.monotonic()
        if self._first_call is None:
            self._first_call = now
        return self.calls <= self._fail_first or now - self._first_call < self._fail_for

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]:
        self.calls += 1
        if self.failing():
            self.failed_calls += 1
            return [Outcome.failed(self._code, "flaky sink: try again later")] * len(batch)
        return await self.inner.submit(batch)


class PartlyFailingSink:
    """Wraps a sink and, for the first ``failing_calls`` calls, answers ``failed`` (transient) for
    every other message of a batch while the rest reach ``inner``: a batch half stored, half not.
    (A one-message batch fails whole on every other of those calls.)"""

    def __init__(self, inner: Sink, *, failing_calls: int = 3) -> None:
        self.inner = inner
        self.failing_calls = failing_calls
        self.calls = 0
        self.failed_messages = 0

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]:
        self.calls += 1
        if self.calls > self.failing_calls:
            return await self.inner.submit(batch)
        offset = self.calls % 2 if len(batch) == 1 else 0
        passing = [i for i in range(len(batch)) if (i + offset) % 2 == 0]
        answers = await self.inner.submit([batch[i] for i in passing]) if passing else []
        answered = dict(zip(passing, answers, strict=True))
        self.failed_messages += len(batch) - len(passing)
        failed = Outcome.failed("provider_unavailable", "partly failing sink: try again later")
        return [answered.get(i, failed) for i in range(len(batch))]


class _Run:
    """A started driver whose start task is watched, so a crash fails the check at once."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.task: asyncio.Task[None] = asyncio.create_task(driver.start())

    def raise_if_crashed(self) -> None:
        if self.task.done() and not self.task.cancelled() and self.task.exception() is not None:
            raise ContractViolation(f"start() raised {self.task.exception()!r}")

    async def stop(self, deadline: float) -> float:
        """Stop within the deadline (plus grace); returns how long stop() took."""
        began = time.monotonic()
        try:
            await asyncio.wait_for(self.driver.stop(deadline), timeout=deadline + STOP_GRACE_SECONDS)
        except TimeoutError:
            raise ContractViolation(f"stop({deadline}) did not return within its deadline") from None
        took = time.monotonic() - began
        done, _ = await asyncio.wait({self.task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            self.task.cancel()
            raise ContractViolation("start() kept running after stop() returned")
        self.raise_if_crashed()
        return took


async def _wait_until(
    what: str, predicate: Callable[[], Awaitable[bool] | bool], *, within: float, runs: Sequence[_Run] = ()
) -> None:
    deadline = time.monotonic() + within
    while True:
        for run in runs:
            run.raise_if_crashed()
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise ContractViolation(f"timed out after {within:.1f}s waiting for: {what}")
        await asyncio.sleep(0.02)


async def _wait_all_stored(
    what: str, sink: ContractSink, messages: Sequence[ContractMessage], *, within: float, runs: Sequence[_Run]
) -> None:
    try:
        await _wait_until(
            what, lambda: all(sink.stored_contents[m.content] for m in messages), within=within, runs=runs
        )
    except ContractViolation as exc:
        lost = sum(1 for m in messages if not sink.stored_contents[m.content])
        raise ContractViolation(
            f"{exc}: {lost} of {len(messages)} messages were lost (acknowledged before "
            "the sink stored them, or never read)"
        ) from None


def _unique(label: str, count: int) -> list[ContractMessage]:
    run = uuid.uuid4().hex[:8]
    return [
        ContractMessage(f"{label}-{run}-{i}", tags=("contract", "even") if i % 2 == 0 else ())
        for i in range(count)
    ]


def _assert_once(sink: ContractSink, messages: Sequence[ContractMessage], when: str) -> None:
    missing = [m.content for m in messages if sink.stored_contents[m.content] == 0]
    if missing:
        raise ContractViolation(
            f"{when}: {len(missing)} of {len(messages)} messages were lost "
            f"(e.g. {missing[0]!r}); was an entry acknowledged before the sink stored it?"
        )
    twice = [c for c, n in sink.stored_contents.items() if n > 1]
    if twice:
        raise ContractViolation(f"{when}: {len(twice)} messages were stored more than once")
    unstable = [c for c, keys in sink.keys_by_content.items() if len(keys) > 1]
    if unstable:
        raise ContractViolation(
            f"{when}: a redelivered message got a different idempotency key "
            f"({unstable[0]!r}); keys must be stable across deliveries"
        )
    expected = {m.content: m for m in messages}
    for (bank, _), stored in sink.memories.items():
        want = expected.get(stored.content)
        if want is not None and (bank != want.bank_id or tuple(stored.tags) != want.tags):
            raise ContractViolation(
                f"{when}: {stored.content!r} arrived with bank {bank!r} and tags "
                f"{list(stored.tags)}, published with {want.bank_id!r} and {list(want.tags)}"
            )


# -- the checks ----------------------------------------------------------------------------------


async def check_exactly_once_across_restart(harness: IngestHarness, settings: ContractSettings) -> None:
    """Publish half, stop the driver mid-way, publish the rest while it is down, start a new
    instance: every message is stored exactly once."""
    sink = ContractSink(latency=0.01)
    messages = _unique("restart", settings.messages)
    half = len(messages) // 2
    first = _Run(harness.build_driver(sink))
    await harness.publish(messages[:half])
    await _wait_until(
        "the first driver to store a quarter of the messages",
        lambda: sum(sink.stored_contents.values()) >= half // 2,
        within=settings.timeout,
        runs=[first],
    )
    await first.stop(settings.stop_deadline)
    await harness.publish(messages[half:])
    await _restart_until_all_stored(
        harness, sink, messages, settings, "the restarted driver to store every message", "across a restart"
    )


async def _restart_until_all_stored(
    harness: IngestHarness,
    sink: ContractSink,
    messages: Sequence[ContractMessage],
    settings: ContractSettings,
    waiting_for: str,
    when: str,
) -> None:
    """Start a fresh driver on the same sink, wait until every message is stored, stop it, and
    check each message took effect exactly once."""
    run = _Run(harness.build_driver(sink))
    await _wait_all_stored(waiting_for, sink, messages, within=settings.timeout, runs=[run])
    await run.stop(settings.stop_deadline)
    _assert_once(sink, messages, when)


async def check_poison_dead_lettered(harness: IngestHarness, settings: ContractSettings) -> None:
    """Poison entries and sink rejections go to the dead-letter destination, exactly once each,
    and do not stall the messages behind them."""
    sink = ContractSink()
    run = _Run(harness.build_driver(sink))
    before = _unique("before-poison", 2)
    after = _unique("after-poison", 2)
    await harness.publish(before)
    expected = {kind: await harness.publish_poison(kind) for kind in harness.poison_kinds}
    [expected["rejected_by_sink"]] = await harness.publish(
        [ContractMessage(f"{REJECT_PREFIX}{uuid.uuid4().hex}")]
    )
    await harness.publish(after)

    async def all_dead_lettered() -> bool:
        return set(expected.values()) <= set(await harness.dead_letter_refs())

    try:
        await _wait_until(
            "messages behind the poison to be stored",
            lambda: all(sink.stored_contents[m.content] for m in before + after),
            within=settings.timeout,
            runs=[run],
        )
        await _wait_until(
            "every poison entry in the dead-letter destination",
            all_dead_lettered,
            within=settings.timeout,
            runs=[run],
        )
    except ContractViolation as exc:
        present = set(await harness.dead_letter_refs())
        lost = sorted(kind for kind, ref in expected.items() if ref not in present)
        raise ContractViolation(f"{exc}; not dead-lettered: {', '.join(lost) or 'none'}") from None
    await asyncio.sleep(0.3)  # give a driver that dead-letters twice the chance to show it
    await run.stop(settings.stop_deadline)
    counts = Counter(await harness.dead_letter_refs())
    repeated = sorted(kind for kind, ref in expected.items() if counts[ref] != 1)
    if repeated:
        raise ContractViolation(f"dead-lettered more than once: {', '.join(repeated)}")

    # Poison the driver dead-letters itself never reaches the sink: unless the driver reports it,
    # monitoring never counts it. Each entry is counted once: rejected by the sink, or reported.
    def counted(ref: str) -> int:
        return sink.rejected_refs[ref] + sink.reported_dead_letters[ref]

    miscounted = sorted(f"{kind} x{counted(ref)}" for kind, ref in expected.items() if counted(ref) != 1)
    if miscounted:
        raise ContractViolation(
            "dead letters not counted once (a sink rejection, or report_dead_lettered for poison "
            "the sink never saw): " + ", ".join(miscounted)
        )
    _assert_once(sink, before + after, "around poison messages")


async def check_backpressure(harness: IngestHarness, settings: ContractSettings) -> None:
    """A sink that fails transiently slows the driver down; nothing is lost or acknowledged early."""
    inner = ContractSink()
    flaky = FlakySink(inner, fail_for_seconds=settings.failure_seconds)
    messages = _unique("backpressure", settings.messages)
    run = _Run(harness.build_driver(flaky))
    await harness.publish(messages)
    await _wait_all_stored(
        "every message stored after the sink recovered",
        inner,
        messages,
        within=settings.timeout + settings.failure_seconds,
        runs=[run],
    )
    await run.stop(settings.stop_deadline)
    if flaky.failed_calls == 0:
        raise ContractViolation(
            "the driver never called the sink while it was failing; the check proved nothing"
        )
    if flaky.failed_calls > settings.max_calls_while_failing:
        raise ContractViolation(
            f"{flaky.failed_calls} sink calls in {settings.failure_seconds}s of failure: "
            "the driver retries without backing off"
        )
    _assert_once(inner, messages, "after transient sink failures")


async def check_stop_drains(harness: IngestHarness, settings: ContractSettings) -> None:
    """stop() lets an in-flight batch finish and acknowledges it; a batch that cannot finish
    within the deadline is abandoned unacknowledged (redelivered later, never lost)."""
    sink = ContractSink(latency=settings.sink_latency)
    messages = _unique("drain", 10)
    run = _Run(harness.build_driver(sink))
    await harness.publish(messages)
    await _wait_until(
        "a batch to reach the sink", lambda: sink.started >= 1, within=settings.timeout, runs=[run]
    )
    await run.stop(settings.stop_deadline)
    if sink.cancelled or sink.in_flight:
        raise ContractViolation("stop() returned while a batch was still in the sink (it did not drain)")
    drained = {c for c, n in sink.stored_contents.items() if n}
    sink.latency = 0.0
    again = _Run(harness.build_driver(sink))
    await _wait_all_stored(
        "the restarted driver to store the rest",
        sink,
        messages,
        within=settings.timeout,
        runs=[again],
    )
    await asyncio.sleep(0.3)
    await again.stop(settings.stop_deadline)
    redelivered = [c for c in drained if sink.duplicate_contents[c]]
    if redelivered:
        raise ContractViolation(
            f"{len(redelivered)} messages stored before stop() were redelivered: the "
            "drained batch was not acknowledged"
        )
    _assert_once(sink, messages, "after a draining stop")
    await _check_stop_deadline(harness, settings)


async def _check_stop_deadline(harness: IngestHarness, settings: ContractSettings) -> None:
    sink = ContractSink()
    sink.gate.clear()  # the sink never answers until we say so
    messages = _unique("deadline", 5)
    run = _Run(harness.build_driver(sink))
    await harness.publish(messages)
    await _wait_until(
        "a batch to reach the blocked sink", lambda: sink.started >= 1, within=settings.timeout, runs=[run]
    )
    deadline = 0.5
    took = await run.stop(deadline)
    if took > deadline + STOP_GRACE_SECONDS:
        raise ContractViolation(f"stop({deadline}) took {took:.1f}s with a blocked sink")
    sink.gate.set()
    await _restart_until_all_stored(
        harness,
        sink,
        messages,
        settings,
        "messages abandoned at the deadline to be redelivered",
        "after a stop that hit its deadline",
    )


async def check_health_states(harness: IngestHarness, settings: ContractSettings) -> None:
    """running -> degraded while the transport is broken -> running after it is restored."""
    sink = ContractSink()
    run = _Run(harness.build_driver(sink))

    def state_is(wanted: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            state = (await run.driver.health()).state
            if state == "failed":
                raise ContractViolation(
                    "health() says failed while the transport is only unreachable; "
                    "report degraded and reconnect"
                )
            return state == wanted

        return probe

    await _wait_until("health running", state_is("running"), within=settings.timeout, runs=[run])
    await harness.break_transport()
    try:
        await _wait_until(
            "health degraded after the transport broke",
            state_is("degraded"),
            within=settings.timeout,
            runs=[run],
        )
    finally:
        await harness.restore_transport()
    await _wait_until(
        "health running after the transport came back",
        state_is("running"),
        within=settings.timeout,
        runs=[run],
    )
    messages = _unique("after-outage", 3)
    await harness.publish(messages)
    await _wait_all_stored(
        "messages published after the outage stored",
        sink,
        messages,
        within=settings.timeout,
        runs=[run],
    )
    await run.stop(settings.stop_deadline)
    final = (await run.driver.health()).state
    if final != "stopped":
        raise ContractViolation(f"health() says {final!r} after stop(); expected 'stopped'")


async def _publish_mixed(harness: IngestHarness, label: str) -> tuple[list[ContractMessage], dict[str, str]]:
    """Valid messages around every poison kind and one sink rejection: (valid, kind -> ref)."""
    before, after = _unique(f"{label}-before", 3), _unique(f"{label}-after", 3)
    await harness.publish(before)
    poison = {kind: await harness.publish_poison(kind) for kind in harness.poison_kinds}
    [poison["rejected_by_sink"]] = await harness.publish(
        [ContractMessage(f"{REJECT_PREFIX}{uuid.uuid4().hex}")]
    )
    await harness.publish(after)
    return before + after, poison


async def _assert_dead_lettered_once(harness: IngestHarness, poison: dict[str, str], when: str) -> None:
    counts = Counter(await harness.dead_letter_refs())
    missing = sorted(kind for kind, ref in poison.items() if counts[ref] == 0)
    if missing:
        raise ContractViolation(f"{when}: not dead-lettered: {', '.join(missing)}")
    repeated = sorted(f"{kind} x{counts[ref]}" for kind, ref in poison.items() if counts[ref] > 1)
    if repeated:
        raise ContractViolation(f"{when}: dead-lettered more than once: {', '.join(repeated)}")


async def _wait_dead_lettered(
    harness: IngestHarness, poison: dict[str, str], settings: ContractSettings, runs: Sequence[_Run]
) -> None:
    async def all_there() -> bool:
        return set(poison.values()) <= set(await harness.dead_letter_refs())

    try:
        await _wait_until(
            "every poison entry in the dead-letter destination", all_there, within=settings.timeout, runs=runs
        )
    except ContractViolation as exc:
        present = set(await harness.dead_letter_refs())
        lost = sorted(kind for kind, ref in poison.items() if ref not in present)
        raise ContractViolation(f"{exc}; not dead-lettered: {', '.join(lost) or 'none'}") from None


async def check_partial_batch_failure(harness: IngestHarness, settings: ContractSettings) -> None:
    """A sink failing some messages of a batch (next to stored and rejected ones) loses nothing:
    the failed ones are retried and every valid message is stored exactly once."""
    inner = ContractSink()
    sink = PartlyFailingSink(inner)
    valid, poison = await _publish_mixed(harness, "partial")
    more = _unique("partial-bulk", settings.messages // 2)
    await harness.publish(more)
    run = _Run(harness.build_driver(sink))
    await _wait_all_stored(
        "every valid message stored although the sink failed part of each batch",
        inner,
        valid + more,
        within=settings.timeout,
        runs=[run],
    )
    await _wait_dead_lettered(harness, poison, settings, [run])
    await asyncio.sleep(0.3)
    await run.stop(settings.stop_deadline)
    if sink.failed_messages == 0:
        raise ContractViolation("the sink never failed a message; the check proved nothing")
    _assert_once(inner, valid + more, "after a sink that failed part of each batch")
    await _assert_dead_lettered_once(harness, poison, "after a sink that failed part of each batch")


async def check_dead_letter_failure_loses_nothing(harness: IngestHarness, settings: ContractSettings) -> None:
    """Dead-letter writes failing mid-batch: the valid messages of the batch are stored anyway
    (while the destination still fails), nothing valid is lost, and each poison entry lands there
    exactly once when it is back."""
    sink = ContractSink()
    run = _Run(harness.build_driver(sink))
    await _wait_until("health running", _state_is(run, "running"), within=settings.timeout, runs=[run])
    await harness.break_dead_letters()
    try:
        valid, poison = await _publish_mixed(harness, "dlq-down")
        # The messages published before the poison share its batch or come earlier, whatever the
        # batch size: those at least must not wait for the dead-letter destination.
        await _wait_all_stored(
            "valid messages stored while the dead-letter destination fails",
            sink,
            valid[:3],
            within=settings.timeout,
            runs=[run],
        )
    finally:
        await harness.restore_dead_letters()
    await _wait_all_stored("every valid message stored", sink, valid, within=settings.timeout, runs=[run])
    await _wait_dead_lettered(harness, poison, settings, [run])
    await asyncio.sleep(0.3)
    await run.stop(settings.stop_deadline)
    _assert_once(sink, valid, "after dead-letter writes failed")
    await _assert_dead_lettered_once(harness, poison, "after dead-letter writes failed")


async def check_dead_letter_once_on_replay(harness: IngestHarness, settings: ContractSettings) -> None:
    """Entries already dead-lettered are not dead-lettered again when the transport redelivers
    everything (group recreated, offsets reset, cursor lost)."""
    sink = ContractSink()
    run = _Run(harness.build_driver(sink))
    valid, poison = await _publish_mixed(harness, "replay")
    await _wait_all_stored("the first delivery stored", sink, valid, within=settings.timeout, runs=[run])
    await _wait_dead_lettered(harness, poison, settings, [run])
    await run.stop(settings.stop_deadline)
    await harness.replay()
    marker = _unique("after-replay", 2)
    await harness.publish(marker)
    again = _Run(harness.build_driver(sink))
    try:
        await _wait_until(
            "the replayed messages delivered again (as duplicates) and new ones stored",
            lambda: (
                all(sink.duplicate_contents[m.content] for m in valid)
                and all(sink.stored_contents[m.content] for m in marker)
            ),
            within=settings.timeout,
            runs=[again],
        )
    except ContractViolation as exc:
        raise ContractViolation(f"{exc} (did replay() make the transport redeliver?)") from None
    await asyncio.sleep(0.3)
    await again.stop(settings.stop_deadline)
    _assert_once(sink, valid + marker, "after a replay")
    await _assert_dead_lettered_once(harness, poison, "after a replay")


def _state_is(run: _Run, wanted: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return (await run.driver.health()).state == wanted

    return probe


CHECKS: dict[str, Callable[[IngestHarness, ContractSettings], Awaitable[None]]] = {
    "exactly_once_across_restart": check_exactly_once_across_restart,
    "poison_dead_lettered": check_poison_dead_lettered,
    "backpressure": check_backpressure,
    "stop_drains": check_stop_drains,
    "health_states": check_health_states,
    "partial_batch_failure": check_partial_batch_failure,
    "dead_letter_failure_loses_nothing": check_dead_letter_failure_loses_nothing,
    "dead_letter_once_on_replay": check_dead_letter_once_on_replay,
}


async def run_check(harness: IngestHarness, name: str, settings: ContractSettings | None = None) -> None:
    """Run one check (by name in :data:`CHECKS`) between ``setup`` and ``teardown``, bounded in time.

    Raises :class:`HookNotSupported` when the check needs an optional hook the harness lacks."""
    settings = settings or harness.contract_settings
    await harness.setup()
    try:
        async with asyncio.timeout(settings.timeout * 4):
            await CHECKS[name](harness, settings)
    except TimeoutError:
        raise ContractViolation(f"{name}: did not finish within {settings.timeout * 4:.0f}s") from None
    except ContractViolation as exc:
        raise ContractViolation(f"{name}: {exc}") from None
    finally:
        await harness.teardown()


async def run_ingest_contract(
    harness: IngestHarness, settings: ContractSettings | None = None, checks: Sequence[str] | None = None
) -> list[str]:
    """Run every check (or the named ones); raises one :class:`ContractViolation` listing all
    failures. Returns the names of the checks skipped because the harness lacks a hook they need."""
    failures: list[str] = []
    skipped: list[str] = []
    for name in checks or CHECKS:
        try:
            await run_check(harness, name, settings)
        except HookNotSupported:
            skipped.append(name)
        except ContractViolation as exc:
            failures.append(str(exc))
    if failures:
        raise ContractViolation("ingest driver contract failed:\n- " + "\n- ".join(failures))
    return skipped


async def run_check_or_skip(
    harness: IngestHarness, name: str, settings: ContractSettings | None = None
) -> None:
    """:func:`run_check` for pytest: a check whose optional hook the harness lacks is skipped."""
    try:
        await run_check(harness, name, settings)
    except HookNotSupported as missing:
        import pytest

        pytest.skip(f"{name}: the harness does not implement the optional hook {missing}()")


class IngestDriverContract:
    """pytest mixin: subclass it in a driver package's tests and define a ``harness`` fixture
    returning an :class:`IngestHarness`; override ``contract_settings`` to loosen bounds."""

    contract_settings: ClassVar[ContractSettings] = ContractSettings()

    async def test_exactly_once_across_restart(self, harness: IngestHarness) -> None:
        await run_check(harness, "exactly_once_across_restart", self.contract_settings)

    async def test_poison_dead_lettered(self, harness: IngestHarness) -> None:
        await run_check(harness, "poison_dead_lettered", self.contract_settings)

    async def test_backpressure(self, harness: IngestHarness) -> None:
        await run_check(harness, "backpressure", self.contract_settings)

    async def test_stop_drains(self, harness: IngestHarness) -> None:
        await run_check(harness, "stop_drains", self.contract_settings)

    async def test_health_states(self, harness: IngestHarness) -> None:
        await run_check(harness, "health_states", self.contract_settings)

    async def test_partial_batch_failure(self, harness: IngestHarness) -> None:
        await run_check(harness, "partial_batch_failure", self.contract_settings)

    async def test_dead_letter_failure_loses_nothing(self, harness: IngestHarness) -> None:
        await run_check_or_skip(harness, "dead_letter_failure_loses_nothing", self.contract_settings)

    async def test_dead_letter_once_on_replay(self, harness: IngestHarness) -> None:
        await run_check_or_skip(harness, "dead_letter_once_on_replay", self.contract_settings)


def installed_ingest_drivers() -> dict[str, EntryPoint]:
    """Every installed driver, keyed ``"<stream|poll>:<name>"``."""
    found: dict[str, EntryPoint] = {}
    for source_type, group in ENTRY_POINT_GROUPS.items():
        for ep in sorted(entry_points(group=group), key=lambda ep: ep.name):
            found[f"{source_type}:{ep.name}"] = ep
    return found


async def contract_harness_for(driver_class: type[Any]) -> IngestHarness:
    """The harness a driver class supplies through its ``contract_harness`` hook.

    Raises :class:`ContractViolation` when the class has no hook; skips the test (fails under
    ``CI``) when the hook answers ``None``.
    """
    name = f"{driver_class.__module__}.{driver_class.__qualname__}"
    if getattr(driver_class, "passive", False):
        import pytest

        pytest.skip(
            f"{name} is passive (fed by the gateway, not a transport): nothing for the kit to consume"
        )
    hook = getattr(driver_class, "contract_harness", None)
    if not callable(hook):
        raise ContractViolation(
            f"{name} has no contract_harness() classmethod, so the ingest contract cannot run against it"
        )
    harness = hook()
    if inspect.isawaitable(harness):
        harness = await harness
    if harness is None:
        missing_service(f"{name}: the test service its contract harness needs is not configured")
    if not isinstance(harness, IngestHarness):
        raise ContractViolation(
            f"{name}.contract_harness() returned {type(harness).__name__}, not an IngestHarness"
        )
    return harness
