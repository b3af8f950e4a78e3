"""Webhook verification (HMAC-SHA256) and the passive ``webhook`` source driver.

Two signature forms are accepted:

- **Standard Webhooks** (https://www.standardwebhooks.com, the default; headers ``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature``): the signature is
  ``v1,`` + base64(HMAC-SHA256(key, id + "." + timestamp + "." + raw_body)), several may be given
  space-separated; the timestamp (unix seconds) must be within ``replay_window_seconds`` of now, in
  either direction. A secret written ``whsec_<base64>`` is the base64-decoded key, as the spec says;
  any other secret is used as its UTF-8 bytes. The delivery id is signed, so it is the idempotency key.
- **GitHub** (``X-Hub-Signature-256: sha256=<hex>`` over the raw body only). Neither the delivery id
  (``X-GitHub-Delivery``) nor a timestamp is signed, so the idempotency key is a hash of the signed
  body: a replay under any other delivery id, or none, is the same memory.

Replays are refused by the store, not by process memory: the idempotency key is built only from
signed content, so a replayed delivery, on any replica, finds the memory the first delivery wrote
and is answered ``duplicate`` (nothing is written), and a sender's redelivery of a delivery that did
get through is one memory too. Any of the active secrets may verify (rotation: configure old and new
during the change). Secrets and signatures never appear in errors or logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import Field, SecretStr

from astrocyte.errors import UnauthenticatedError, ValidationError
from astrocyte.ingest.driver import DriverConfig, DriverHealth, validate_model
from astrocyte.ingest.payloads import load_payload
from astrocyte.ingest.sink import IngestMessage, Outcome, Sink
from astrocyte.validation import refuse_non_standard_json

_HEX = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^\d{1,12}$")
_DELIVERY_ID = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_SECRET_PREFIX = "whsec_"


class WebhookSettings(DriverConfig):
    """Config of a webhook source (the driver keys of ``sources.<id>`` with ``driver: webhook``)."""

    secrets: list[SecretStr] = Field(min_length=1)
    id_header: str = "webhook-id"
    timestamp_header: str = "webhook-timestamp"
    signature_header: str = "webhook-signature"
    accept_github: bool = True
    github_signature_header: str = "X-Hub-Signature-256"
    github_delivery_header: str = "X-GitHub-Delivery"
    replay_window_seconds: float = Field(default=300.0, gt=0)
    # A sender's own event shape, mapped by a registered mapping (see astrocyte.ingest.payloads).
    payload: str | None = None
    payload_options: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VerifiedDelivery:
    """A delivery whose signature checked out. ``idempotency_key`` is built from signed content only:
    the signed delivery id (Standard Webhooks), or a hash of the body (GitHub)."""

    form: Literal["standard", "github"]
    delivery_id: str | None
    idempotency_key: str
    timestamp: float | None


def _invalid(message: str) -> UnauthenticatedError:
    return UnauthenticatedError(message, code="webhook_signature_invalid")


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: ``whsec_<base64>`` decoded (Standard Webhooks), else its bytes."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith(_SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(_SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ webhook secret must be base64 after the prefix") from None
    return secret.encode()


class WebhookVerifier:
    """Checks webhook signatures and timestamps. Holds no per-delivery state: replays are answered by
    the store's idempotency keys, which every replica shares."""

    def __init__(
        self,
        secrets: Sequence[str | bytes],
        *,
        id_header: str = "webhook-id",
        timestamp_header: str = "webhook-timestamp",
        signature_header: str = "webhook-signature",
        accept_github: bool = True,
        github_signature_header: str = "X-Hub-Signature-256",
        github_delivery_header: str = "X-GitHub-Delivery",
        replay_window_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rotate(secrets)
        self._id_header, self._ts_header = id_header.lower(), timestamp_header.lower()
        self._sig_header = signature_header.lower()
        self._accept_github = accept_github
        self._gh_sig_header = github_signature_header.lower()
        self._gh_delivery_header = github_delivery_header.lower()
        self._window = replay_window_seconds
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: WebhookSettings, *, clock: Callable[[], float] = time.time
    ) -> WebhookVerifier:
        fields = settings.model_dump(exclude={"secrets", "payload", "payload_options"})
        return cls([s.get_secret_value() for s in settings.secrets], clock=clock, **fields)

    def rotate(self, secrets: Sequence[str | bytes]) -> None:
        """Replace the active secrets (any of them verifies)."""
        keys = [secret_key(s) for s in secrets]
        if not keys or any(not k for k in keys):
            raise ValueError("at least one non-empty webhook secret is required")
        self._keys = keys

    def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedDelivery:
        """Verify a delivery or raise ``UnauthenticatedError`` with code ``webhook_signature_invalid``
        or ``webhook_timestamp_stale``."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if self._sig_header in lowered:
            return self._verify_standard(lowered, body)
        if self._accept_github and self._gh_sig_header in lowered:
            return self._verify_github(lowered, body)
        raise _invalid("the webhook request carries no signature header")

    def _verify_standard(self, headers: Mapping[str, str], body: bytes) -> VerifiedDelivery:
        delivery_id = headers.get(self._id_header, "").strip()
        if not _DELIVERY_ID.match(delivery_id):
            raise _invalid("the webhook id header is missing or not printable ASCII (1-255 characters)")
        raw_ts = headers.get(self._ts_header, "").strip()
        if not _TIMESTAMP.match(raw_ts):
            raise _invalid("the webhook timestamp header is missing or not unix seconds")
        signed = f"{delivery_id}.{raw_ts}.".encode() + body
        expected = [base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()) for k in self._keys]
        candidates = [
            part[3:].encode() for part in headers[self._sig_header].split() if part.startswith("v1,")
        ]
        _match_any(candidates, expected)
        timestamp = float(raw_ts)
        if abs(self._clock() - timestamp) > self._window:
            raise UnauthenticatedError(
                "the webhook timestamp is outside the replay window; check the sender's clock",
                code="webhook_timestamp_stale",
            )
        return VerifiedDelivery("standard", delivery_id, delivery_id, timestamp)

    def _verify_github(self, headers: Mapping[str, str], body: bytes) -> VerifiedDelivery:
        candidates = []
        for part in headers[self._gh_sig_header].split(","):
            part = part.strip().lower()
            if part.startswith("sha256=") and _HEX.match(part[7:]):
                candidates.append(part[7:].encode())
        expected = [hmac.new(k, body, hashlib.sha256).hexdigest().encode() for k in self._keys]
        _match_any(candidates, expected)
        delivery_id = headers.get(self._gh_delivery_header) or None  # unsigned: for logs only
        key = "sha256:" + hashlib.sha256(body).hexdigest()
        return VerifiedDelivery("github", delivery_id, key, None)


def _match_any(candidates: Sequence[bytes], expected: Sequence[bytes]) -> None:
    # Compare every pair so timing does not reveal which secret (if any) matched.
    matches = [hmac.compare_digest(c, e) for c in candidates for e in expected]
    if not any(matches):
        raise _invalid("the webhook signature does not match any active secret")


def sign(
    secret: str | bytes, body: bytes, timestamp: int | str | None = None, delivery_id: str | None = None
) -> str:
    """The signature header value a sender computes: with ``delivery_id`` and ``timestamp`` the
    Standard Webhooks ``v1,<base64>``; without them the GitHub ``sha256=<hex>`` over the body."""
    key = secret_key(secret)
    if delivery_id is None or timestamp is None:
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookPayload(pydantic.BaseModel):
    """The default body shape. Parsed with pydantic's JSON parser, which bounds nesting depth and
    refuses wrong types, so every bad body is a 400, never a crash."""

    model_config = pydantic.ConfigDict(extra="ignore", allow_inf_nan=False)

    content: str
    bank_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime | None = None
    principal: str | None = None


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
        stale) or ``ValidationError(code="webhook_payload_invalid")``; returns the sink's outcome
        otherwise (``duplicate`` for a replay or a redelivery; ``failed`` means: answer 503 so the
        sender retries)."""
        delivery = self.verifier.verify(headers, body)
        if self._mapper is not None:
            # The mapping's idempotency keys derive from the signed body, so a replay is a duplicate.
            return await self._submit_mapped(headers, body)
        [outcome] = await self.sink.submit([self.parse(delivery, body)])
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
            payload = WebhookPayload.model_validate_json(body)
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise ValidationError(
                f"the webhook body is not a valid message: {where}: {first.get('msg', 'invalid')}",
                code="webhook_payload_invalid",
            ) from None
        refuse_non_standard_json(body, code="webhook_payload_invalid")
        return IngestMessage(
            idempotency_key=delivery.idempotency_key,
            content=payload.content,
            bank_id=payload.bank_id,
            metadata=payload.metadata,
            tags=tuple(payload.tags),
            occurred_at=payload.occurred_at,
            principal=payload.principal,
            raw_ref=f"{self.source_id}:{delivery.delivery_id or delivery.idempotency_key}",
        )
