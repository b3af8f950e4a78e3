"""The sink: the core's one door from ingest drivers into memory.

A driver hands a batch of :class:`IngestMessage` to ``await sink.submit(batch)`` and gets one
:class:`Outcome` per message, in order:

- ``stored``: a new memory was written.
- ``duplicate``: a memory with this idempotency key already exists in that bank; nothing written.
- ``rejected``: permanent (bad bank, PII rejected, too large, access denied, ...). Send the entry to
  the dead-letter destination with ``code``/``reason``, then acknowledge it.
- ``failed``: transient (store down, rate limited, unexpected error). Do **not** acknowledge; retry
  later with backoff (``retry_after`` seconds when the engine said so) and pause reading meanwhile.

Idempotency keys are used as given (drivers namespace them, e.g. ``<stream>:<entry id>``);
messages sharing ``(bank, key)`` inside one batch resolve to one memory.

A message with ``memory_key`` mirrors an external object (an issue, a comment): a new version
(another idempotency key) replaces the bank's memory for that key instead of adding a copy, and
answers ``stored``. A message with ``forget=True`` deletes the memory held under its ``memory_key``
and answers ``stored`` with ``code="forgotten"`` (also when there was nothing to delete).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from astrocyte.errors import AstrocyteError, NotFoundError, RateLimitedError, ValidationError
from astrocyte.ingest.principals import PrincipalPolicy
from astrocyte.types import AstrocyteContext, RetainRequest, RetainResult

if TYPE_CHECKING:
    from astrocyte.ingest.config import SourceConfig

log = logging.getLogger("astrocyte.ingest.sink")

OutcomeStatus = Literal["stored", "duplicate", "rejected", "failed"]
TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class IngestMessage:
    """One transport entry, decoded. ``bank_id`` may be None when the source supplies a default
    or template; ``principal`` is the principal the message claims (subject to source trust);
    ``raw_ref`` is the transport position (``stream:1700000000-0``) for logs and dead letters."""

    idempotency_key: str
    content: str
    bank_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    occurred_at: datetime | None = None
    principal: str | None = None
    raw_ref: str | None = None
    memory_key: str | None = None
    forget: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """The sink's answer for one message."""

    status: OutcomeStatus
    memory_id: str | None = None
    code: str | None = None
    reason: str | None = None
    retry_after: float | None = None

    @property
    def settled(self) -> bool:
        """True when the driver may acknowledge the entry (after dead-lettering a rejection)."""
        return self.status != "failed"

    @classmethod
    def rejected(cls, code: str, reason: str) -> Outcome:
        return cls("rejected", code=code, reason=reason)

    @classmethod
    def failed(cls, code: str, reason: str, retry_after: float | None = None) -> Outcome:
        return cls("failed", code=code, reason=reason, retry_after=retry_after)


class Sink(Protocol):
    """What a driver is given. Implementations never raise for a bad message."""

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]: ...


def report_dead_lettered(sink: Sink, raw_ref: str, code: str, reason: str) -> None:
    """Tell the sink about an entry the driver dead-lettered without submitting it (poison: not
    UTF-8, bad JSON, delivered too often), so it is counted and logged like a sink rejection.

    Call it once per entry, when the dead-letter write succeeded (not again for a redelivery of an
    entry already dead-lettered). Sinks without a ``record_dead_lettered`` method are left alone."""
    record = getattr(sink, "record_dead_lettered", None)
    if callable(record):
        record(raw_ref, code, reason)


class RetainManyTarget(Protocol):
    """The part of :class:`astrocyte.brain.Astrocyte` the sink uses."""

    def retain_many(
        self, requests: Sequence[RetainRequest], *, context: AstrocyteContext | None = None
    ) -> Awaitable[list[RetainResult | AstrocyteError]]: ...


# Called with a batch's outcomes and the seconds the batch took; ``None`` seconds for an entry the
# driver dead-lettered itself (counted, but not a batch).
SinkObserver = Callable[[Sequence[Outcome], float | None], None]


def outcome_for_error(error: BaseException) -> Outcome:
    """Classify an exception: rate limits and unavailability are transient, other library errors are
    permanent, anything unexpected is transient (retrying is safe; dropping is not)."""
    if isinstance(error, AstrocyteError):
        if error.http_status in TRANSIENT_HTTP_STATUSES:
            retry = error.retry_after if isinstance(error, RateLimitedError) else None
            return Outcome.failed(error.code, error.message, retry)
        return Outcome.rejected(error.code, error.message)
    return Outcome.failed("sink_error", f"unexpected {type(error).__name__}")


def outcome_for_result(result: RetainResult | BaseException) -> Outcome:
    if isinstance(result, BaseException):
        return outcome_for_error(result)
    if result.deduplicated:
        return Outcome("duplicate", result.memory_id)
    if result.stored:
        return Outcome("stored", result.memory_id)
    return Outcome.rejected("retain_not_stored", result.error or "the engine did not store the message")


@dataclass(slots=True)
class _Prepared:
    """Leaders (first message per bank and key) grouped by the context they retain under."""

    outcomes: list[Outcome | None]
    groups: dict[AstrocyteContext, _Group]
    followers: dict[int, int]  # message index -> leader index
    forgets: list[int] = field(default_factory=list)  # indices of forget messages


@dataclass(slots=True)
class _Group:
    """The requests retained under one context, and the message index of each (parallel lists:
    no pair object per message)."""

    indices: list[int] = field(default_factory=list)
    requests: list[RetainRequest] = field(default_factory=list)


class IngestSink:
    """A :class:`Sink` writing into an :class:`Astrocyte` engine through ``retain_many``."""

    def __init__(
        self,
        brain: RetainManyTarget,
        *,
        source_id: str,
        policy: PrincipalPolicy | None = None,
        bank_id: str | None = None,
        bank_template: str | None = None,
        max_batch: int = 500,
        observer: SinkObserver | None = None,
    ) -> None:
        self._brain = brain
        self.source_id = source_id
        self._policy = policy or PrincipalPolicy(source_id, f"service:{source_id}")
        self._bank_id = bank_id
        self._bank_template = bank_template
        self._max_batch = max(1, max_batch)
        self._observer = observer

    @classmethod
    def for_source(
        cls,
        brain: RetainManyTarget,
        source: SourceConfig,
        *,
        observer: SinkObserver | None = None,
        max_batch: int = 500,
    ) -> IngestSink:
        """The sink for one configured source (its principal policy and bank defaults)."""
        return cls(
            brain,
            source_id=source.source_id,
            policy=source.principal_policy,
            bank_id=source.bank_id,
            bank_template=source.bank_template,
            observer=observer,
            max_batch=max_batch,
        )

    @property
    def store(self) -> Any | None:
        """The engine's store, where drivers keep cursors and leases (:mod:`astrocyte.ingest.state`)."""
        return getattr(self._brain, "store", None)

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]:
        """Retain a batch; one outcome per message, in order. Never raises for a bad message."""
        started = time.perf_counter()
        prepared = self._prepare(batch)
        await asyncio.gather(
            *(self._retain_group(ctx, group, prepared.outcomes) for ctx, group in prepared.groups.items()),
            *(self._forget(batch[i], i, prepared.outcomes) for i in prepared.forgets),
        )
        for index, leader in prepared.followers.items():
            prepared.outcomes[index] = _follower_outcome(prepared.outcomes[leader])
        outcomes = [o or Outcome.failed("sink_error", "no outcome") for o in prepared.outcomes]
        for message, outcome in zip(batch, outcomes, strict=True):
            if outcome.status == "rejected":
                self._log_rejected(message.raw_ref or message.idempotency_key, outcome.code, outcome.reason)
        if self._observer is not None:
            self._observer(outcomes, time.perf_counter() - started)
        return outcomes

    def record_dead_lettered(self, raw_ref: str, code: str, reason: str) -> None:
        """Count and log an entry the driver dead-lettered before it reached the sink (see
        :func:`report_dead_lettered`): ``rejected`` in the metrics and the source's counters."""
        self._log_rejected(raw_ref, code, reason)
        if self._observer is not None:
            self._observer([Outcome.rejected(code, reason)], None)

    def _log_rejected(self, raw_ref: str, code: str | None, reason: str | None) -> None:
        # The code and the entry's position are in the text too: the default formatter drops extras.
        log.info(
            "ingest message rejected: source %s, entry %s: %s: %s",
            self.source_id,
            raw_ref,
            code,
            (reason or "")[:200],
            extra={"source_id": self.source_id, "raw_ref": raw_ref, "code": code},
        )

    def _prepare(self, batch: Sequence[IngestMessage]) -> _Prepared:
        prepared = _Prepared([None] * len(batch), {}, {})
        leaders: dict[str, dict[str, int]] = {}  # bank -> idempotency key -> first message index
        # A batch names few principals: resolve each once (the context, or why it is refused).
        contexts: dict[str | None, AstrocyteContext | AstrocyteError] = {}
        groups: dict[str | None, _Group] = {}  # by principal: no context hash per message
        for index, message in enumerate(batch):
            try:
                bank_id = self._bank_for(message)
            except AstrocyteError as exc:
                prepared.outcomes[index] = Outcome.rejected(exc.code, exc.message)
                continue
            context = contexts.get(message.principal)
            if context is None:
                context = contexts[message.principal] = self._context_for(message.principal)
            if isinstance(context, AstrocyteError):
                prepared.outcomes[index] = Outcome.rejected(context.code, context.message)
                continue
            if message.forget:
                prepared.forgets.append(index)
                continue
            keys = leaders.get(bank_id)
            if keys is None:
                keys = leaders[bank_id] = {}
            leader = keys.setdefault(message.idempotency_key, index)
            if leader != index:
                prepared.followers[index] = leader
                continue
            group = groups.get(message.principal)
            if group is None:
                group = groups[message.principal] = prepared.groups.setdefault(context, _Group())
            group.indices.append(index)
            group.requests.append(self._request(message, bank_id))
        return prepared

    def _bank_for(self, message: IngestMessage) -> str:
        if not message.idempotency_key:
            raise ValidationError("the message has no idempotency key", code="idempotency_key_missing")
        bank_id = message.bank_id or self._bank_from_template(message.metadata) or self._bank_id
        if not bank_id:
            raise ValidationError(
                "the message names no bank and the source has no bank_id or usable bank_template",
                code="bank_missing",
            )
        return bank_id

    def _context_for(self, principal: str | None) -> AstrocyteContext | AstrocyteError:
        try:
            return self._policy.context_for(principal)
        except AstrocyteError as exc:
            return exc

    def _bank_from_template(self, metadata: Mapping[str, Any]) -> str | None:
        if not self._bank_template:
            return None
        try:
            return self._bank_template.format_map(
                {k: v for k, v in metadata.items() if isinstance(v, str | int) and not isinstance(v, bool)}
            )
        except (KeyError, ValueError):
            return None

    def _request(self, message: IngestMessage, bank_id: str) -> RetainRequest:
        return RetainRequest(
            content=message.content,
            bank_id=bank_id,
            metadata=dict(message.metadata),
            tags=tuple(message.tags),
            occurred_at=message.occurred_at,
            source=self.source_id,
            idempotency_key=message.idempotency_key,
            memory_key=message.memory_key,
        )

    async def _forget(self, message: IngestMessage, index: int, outcomes: list[Outcome | None]) -> None:
        """Delete the memory a forget message names (its bank and ``memory_key``)."""
        if not message.memory_key:
            outcomes[index] = Outcome.rejected("memory_key_missing", "a forget message needs a memory_key")
            return
        forget = getattr(self._brain, "forget", None)
        if forget is None:
            outcomes[index] = Outcome.rejected("not_supported", "this sink's engine cannot forget")
            return
        bank_id = self._bank_for(message)
        context = self._context_for(message.principal)
        try:
            if isinstance(context, AstrocyteError):
                raise context
            result = await forget(bank_id, memory_keys=[message.memory_key], context=context)
        except NotFoundError:  # the bank was never written: nothing to forget
            outcomes[index] = Outcome("stored", code="forgotten", reason="0 memories deleted")
            return
        except Exception as exc:
            outcomes[index] = outcome_for_error(exc)
            return
        outcomes[index] = Outcome(
            "stored", code="forgotten", reason=f"{result.deleted_count} memories deleted"
        )

    async def _retain_group(
        self, context: AstrocyteContext, group: _Group, outcomes: list[Outcome | None]
    ) -> None:
        size = self._max_batch
        for start in range(0, len(group.requests), size):
            results = await self._retain_chunk(context, group.requests[start : start + size])
            for index, outcome in zip(group.indices[start : start + size], results, strict=True):
                outcomes[index] = outcome

    async def _retain_chunk(self, context: AstrocyteContext, requests: list[RetainRequest]) -> list[Outcome]:
        try:
            results = await self._brain.retain_many(requests, context=context)
        except AstrocyteError as exc:
            outcome = outcome_for_error(exc)
            if outcome.status == "failed" or len(requests) == 1:
                return [outcome] * len(requests)
            # A batch-wide permanent error: retry one by one so only the bad message is rejected.
            singles = [await self._retain_chunk(context, [request]) for request in requests]
            return [single[0] for single in singles]
        except Exception as exc:  # unknown failures are transient: retry, never drop
            log.warning(
                "ingest sink batch failed: %s", type(exc).__name__, extra={"source_id": self.source_id}
            )
            return [outcome_for_error(exc)] * len(requests)
        if len(results) != len(requests):
            return [Outcome.failed("sink_error", "retain_many answered the wrong number of results")] * len(
                requests
            )
        return [outcome_for_result(result) for result in results]


def _follower_outcome(leader: Outcome | None) -> Outcome | None:
    if leader is not None and leader.status in ("stored", "duplicate"):
        return Outcome("duplicate", memory_id=leader.memory_id)
    return leader
