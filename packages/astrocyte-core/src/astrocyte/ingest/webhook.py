"""Webhook verification (HMAC-SHA256) and the passive ``webhook`` source driver.

Two signature forms are accepted:

- **Timestamped** (default headers ``X-Astrocyte-Timestamp`` and ``X-Astrocyte-Signature``): the
  signature is ``hex(HMAC-SHA256(secret, timestamp + "." + raw_body))``, optionally prefixed
  ``sha256=``; the timestamp (unix seconds) must be within ``replay_window_seconds`` of now, in
  either direction.
- **GitHub** (``X-Hub-Signature-256: sha256=<hex>`` over the raw body only). It carries no
  timestamp, so replay protection rests on the delivery id (``X-GitHub-Delivery``): it is required,
  and a delivery id seen recently is refused.

Any of the active secrets may verify (rotation: configure old and new during the change). A
delivery id is remembered once verified (bounded cache, per process) and refused when repeated;
call :meth:`WebhookVerifier.release` when the delivery could not be processed so the sender's retry
is accepted. Secrets and signatures never appear in errors or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from astrocyte.errors import UnauthenticatedError, ValidationError
from astrocyte.ingest.driver import DriverConfig, DriverHealth, validate_model
from astrocyte.ingest.payloads import load_payload
from astrocyte.ingest.sink import IngestMessage, Outcome, Sink

_HEX = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^\d{1,12}(\.\d{1,6})?$")


class WebhookSettings(DriverConfig):
    """Config of a webhook source (the driver keys of ``sources.<id>`` with ``driver: webhook``)."""

    secrets: list[SecretStr] = Field(min_length=1)
    timestamp_header: str = "X-Astrocyte-Timestamp"
    signature_header: str = "X-Astrocyte-Signature"
    delivery_header: str = "X-Astrocyte-Delivery"
    accept_github: bool = True
    github_signature_header: str = "X-Hub-Signature-256"
    github_delivery_header: str = "X-GitHub-Delivery"
    replay_window_seconds: float = Field(default=300.0, gt=0)
    delivery_cache_size: int = Field(default=10_000, ge=1)
    # A sender's own event shape, mapped by a registered mapping (see astrocyte.ingest.payloads).
    payload: str | None = None
    payload_options: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VerifiedDelivery:
    """A delivery whose signature checked out. ``idempotency_key`` is the delivery id, or a hash of
    timestamp and body when the sender sent no delivery id."""

    form: Literal["timestamp", "github"]
    delivery_id: str | None
    idempotency_key: str
    timestamp: float | None


class _RecentIds:
    """Bounded insertion-ordered set: the oldest id is forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add_new(self, key: str) -> bool:
        if key in self._ids:
            return False
        self._ids[key] = None
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def discard(self, key: str) -> None:
        self._ids.pop(key, None)

    def __len__(self) -> int:
        return len(self._ids)


def _invalid(message: str) -> UnauthenticatedError:
    return UnauthenticatedError(message, code="webhook_signature_invalid")


class WebhookVerifier:
    """Checks webhook signatures, timestamps and delivery ids. Thread-unsafe; one per event loop."""

    def __init__(
        self,
        secrets: Sequence[str | bytes],
        *,
        timestamp_header: str = "X-Astrocyte-Timestamp",
        signature_header: str = "X-Astrocyte-Signature",
        delivery_header: str = "X-Astrocyte-Delivery",
        accept_github: bool = True,
        github_signature_header: str = "X-Hub-Signature-256",
        github_delivery_header: str = "X-GitHub-Delivery",
        replay_window_seconds: float = 300.0,
        delivery_cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rotate(secrets)
        self._ts_header, self._sig_header = timestamp_header.lower(), signature_header.lower()
        self._delivery_header = delivery_header.lower()
        self._accept_github = accept_github
        self._gh_sig_header, self._gh_delivery_header = (
            github_signature_header.lower(),
            github_delivery_header.lower(),
        )
        self._window = replay_window_seconds
        self._seen = _RecentIds(delivery_cache_size)
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: WebhookSettings, *, clock: Callable[[], float] = time.time
    ) -> WebhookVerifier:
        fields = settings.model_dump(exclude={"secrets", "payload", "payload_options"})
        return cls([s.get_secret_value() for s in settings.secrets], clock=clock, **fields)

    def rotate(self, secrets: Sequence[str | bytes]) -> None:
        """Replace the active secrets (any of them verifies)."""
        keys = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]
        if not keys or any(not k for k in keys):
            raise ValueError("at least one non-empty webhook secret is required")
        self._keys = keys

    def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedDelivery:
        """Verify a delivery or raise ``UnauthenticatedError`` with code ``webhook_signature_invalid``,
        ``webhook_timestamp_stale``, ``webhook_replayed`` or ``webhook_delivery_missing``."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if self._sig_header in lowered:
            delivery = self._verify_timestamped(lowered, body)
        elif self._accept_github and self._gh_sig_header in lowered:
            delivery = self._verify_github(lowered, body)
        else:
            raise _invalid("the webhook request carries no signature header")
        if delivery.delivery_id is not None and not self._seen.add_new(delivery.delivery_id):
            raise UnauthenticatedError("this webhook delivery was already received", code="webhook_replayed")
        return delivery

    def release(self, delivery_id: str | None) -> None:
        """Forget a delivery id so the sender's retry is accepted (call when processing failed)."""
        if delivery_id is not None:
            self._seen.discard(delivery_id)

    def _verify_timestamped(self, headers: Mapping[str, str], body: bytes) -> VerifiedDelivery:
        raw_ts = headers.get(self._ts_header, "").strip()
        if not _TIMESTAMP.match(raw_ts):
            raise _invalid("the webhook timestamp header is missing or not unix seconds")
        self._check_signature(headers[self._sig_header], raw_ts.encode() + b"." + body)
        timestamp = float(raw_ts)
        if abs(self._clock() - timestamp) > self._window:
            raise UnauthenticatedError(
                "the webhook timestamp is outside the replay window; check the sender's clock",
                code="webhook_timestamp_stale",
            )
        delivery_id = headers.get(self._delivery_header) or None
        key = delivery_id or "sha256:" + hashlib.sha256(raw_ts.encode() + b"." + body).hexdigest()
        return VerifiedDelivery("timestamp", delivery_id, key, timestamp)

    def _verify_github(self, headers: Mapping[str, str], body: bytes) -> VerifiedDelivery:
        self._check_signature(headers[self._gh_sig_header], body, require_prefix=True)
        delivery_id = headers.get(self._gh_delivery_header) or None
        if delivery_id is None:
            raise UnauthenticatedError(
                "a GitHub-style signature needs the delivery id header for replay protection",
                code="webhook_delivery_missing",
            )
        return VerifiedDelivery("github", delivery_id, delivery_id, None)

    def _check_signature(self, header_value: str, signed: bytes, *, require_prefix: bool = False) -> None:
        candidates = []
        for part in header_value.split(","):
            part = part.strip().lower()
            if part.startswith("sha256="):
                part = part[len("sha256=") :]
            elif require_prefix:
                continue
            if _HEX.match(part):
                candidates.append(part.encode())
        expected = [hmac.new(key, signed, hashlib.sha256).hexdigest().encode() for key in self._keys]
        # Compare every pair so timing does not reveal which secret (if any) matched.
        matches = [hmac.compare_digest(c, e) for c in candidates for e in expected]
        if not any(matches):
            raise _invalid("the webhook signature does not match any active secret")


def sign(secret: str | bytes, body: bytes, timestamp: int | str | None = None) -> str:
    """The signature header value a sender computes (``sha256=<hex>``); GitHub form without a timestamp."""
    key = secret.encode() if isinstance(secret, str) else secret
    signed = body if timestamp is None else str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(key, signed, hashlib.sha256).hexdigest()


class WebhookDriver:
    """A passive source: the gateway's ``POST /v1/ingest/webhook/{source_id}`` calls :meth:`handle`.

    The body is JSON ``{"content": str, "bank_id"?, "tags"?, "metadata"?, "occurred_at"?
    (ISO 8601), "principal"?}``. Override :meth:`parse` for other payload shapes.
    """

    source_type: ClassVar[Literal["stream", "poll"]] = "stream"
    passive: ClassVar[bool] = True  # nothing to consume: the contract kit skips it

    def __init__(self, source_id: str, config: WebhookSettings, *, sink: Sink) -> None:
        self.source_id = source_id
        self.config = config
        self.sink = sink
        self.verifier = WebhookVerifier.from_settings(config)
        self._mapper = load_payload(config.payload, config.payload_options) if config.payload else None
        self._running = False

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> WebhookSettings:
        settings = validate_model(WebhookSettings, mapping)
        if settings.payload:  # a bad mapping name or option stops start-up, not the first delivery
            load_payload(settings.payload, settings.payload_options)
        return settings

    async def start(self) -> None:
        self._running = True

    async def stop(self, deadline: float) -> None:
        self._running = False

    async def health(self) -> DriverHealth:
        return DriverHealth("running" if self._running else "stopped")

    async def handle(self, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Verify, parse and submit one delivery. Raises ``UnauthenticatedError`` (bad signature,
        stale, replayed) or ``ValidationError(code="webhook_payload_invalid")``; returns the sink's
        outcome otherwise (``failed`` means: answer 503 so the sender retries)."""
        delivery = self.verifier.verify(headers, body)
        try:
            if self._mapper is not None:
                outcome = await self._submit_mapped(headers, body)
            else:
                [outcome] = await self.sink.submit([self.parse(delivery, body)])
        except BaseException:
            self.verifier.release(delivery.delivery_id)
            raise
        if not outcome.settled:
            self.verifier.release(delivery.delivery_id)
        return outcome

    async def _submit_mapped(self, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Submit what the payload mapping made of the delivery; one outcome for all of it (the
        first failure, else the first rejection, else the first message's)."""
        assert self._mapper is not None
        messages = list(self._mapper(headers, body))
        if not messages:
            return Outcome("duplicate", code="ignored", reason="the event carries nothing to remember")
        outcomes = await self.sink.submit(messages)
        for status in ("failed", "rejected"):
            for outcome in outcomes:
                if outcome.status == status:
                    return outcome
        return outcomes[0]

    def parse(self, delivery: VerifiedDelivery, body: bytes) -> IngestMessage:
        """Turn a verified body into a message; the delivery's key is the idempotency key."""
        try:
            payload = json.loads(body)
            content = payload["content"]
            if not isinstance(content, str) or not isinstance(payload, dict):
                raise TypeError("content must be a string")
            occurred = payload.get("occurred_at")
            return IngestMessage(
                idempotency_key=delivery.idempotency_key,
                content=content,
                bank_id=payload.get("bank_id"),
                metadata=dict(payload.get("metadata") or {}),
                tags=tuple(payload.get("tags") or ()),
                occurred_at=datetime.fromisoformat(occurred) if occurred else None,
                principal=payload.get("principal"),
                raw_ref=f"{self.source_id}:{delivery.delivery_id or delivery.idempotency_key}",
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationError(
                f"the webhook body is not a valid message: {type(exc).__name__}",
                code="webhook_payload_invalid",
            ) from exc
