"""Webhook verification: timestamped HMAC, the GitHub form, replay refusal, secret rotation."""

from __future__ import annotations

import json
import logging

import pytest
from astrocyte.errors import ConfigError, UnauthenticatedError, ValidationError
from astrocyte.ingest.config import validate_source
from astrocyte.ingest.sink import IngestSink
from astrocyte.ingest.webhook import WebhookDriver, WebhookVerifier, sign

NOW = 1_800_000_000
OLD, NEW = "old-secret-value", "new-secret-value"
BODY = json.dumps({"content": "deploy finished", "bank_id": "hooks"}).encode()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def timestamped(
    body: bytes = BODY, secret: str = OLD, ts: int = NOW, delivery: str | None = "d-1"
) -> dict[str, str]:
    headers = {"X-Astrocyte-Timestamp": str(ts), "X-Astrocyte-Signature": sign(secret, body, ts)}
    if delivery:
        headers["X-Astrocyte-Delivery"] = delivery
    return headers


def github(body: bytes = BODY, secret: str = OLD, delivery: str | None = "gh-1") -> dict[str, str]:
    headers = {"X-Hub-Signature-256": sign(secret, body)}
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def code_of(verifier: WebhookVerifier, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(UnauthenticatedError) as caught:
        verifier.verify(headers, body)
    return caught.value.code


def test_timestamped_signature_verifies_and_keys_on_the_delivery_id() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    delivery = verifier.verify(timestamped(), BODY)
    assert (delivery.form, delivery.delivery_id, delivery.idempotency_key) == ("timestamp", "d-1", "d-1")


def test_header_names_are_case_insensitive_and_configurable() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock(), timestamp_header="X-Ts", signature_header="X-Sig")
    headers = {"x-ts": str(NOW), "x-sig": sign(OLD, BODY, NOW)}
    assert verifier.verify(headers, BODY).form == "timestamp"


def test_without_delivery_id_the_key_is_a_hash_of_timestamp_and_body() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    first = verifier.verify(timestamped(delivery=None), BODY)
    again = verifier.verify(timestamped(delivery=None), BODY)  # a replay in the window is an idempotent no-op
    assert first.idempotency_key == again.idempotency_key and first.idempotency_key.startswith("sha256:")


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_stale_or_future_timestamp_is_refused(skew: int) -> None:
    verifier = WebhookVerifier([OLD], clock=Clock(NOW + skew))
    assert code_of(verifier, timestamped()) == "webhook_timestamp_stale"


def test_timestamp_at_the_window_edge_is_accepted() -> None:
    assert WebhookVerifier([OLD], clock=Clock(NOW + 300)).verify(timestamped(), BODY)
    assert WebhookVerifier([OLD], clock=Clock(NOW - 300)).verify(timestamped(), BODY)


def test_replayed_delivery_is_refused() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    verifier.verify(timestamped(), BODY)
    assert code_of(verifier, timestamped()) == "webhook_replayed"
    verifier.verify(github(), BODY)
    assert code_of(verifier, github()) == "webhook_replayed"


def test_released_delivery_may_be_retried() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    delivery = verifier.verify(github(), BODY)
    verifier.release(delivery.delivery_id)
    assert verifier.verify(github(), BODY).delivery_id == "gh-1"


def test_tampered_body_timestamp_or_secret_is_refused() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    assert code_of(verifier, timestamped(), BODY + b" ") == "webhook_signature_invalid"
    moved = {**timestamped(), "X-Astrocyte-Timestamp": str(NOW + 1)}
    assert code_of(verifier, moved) == "webhook_signature_invalid"
    assert code_of(verifier, timestamped(secret="guess")) == "webhook_signature_invalid"
    assert code_of(verifier, github(secret="guess")) == "webhook_signature_invalid"
    assert code_of(verifier, {}) == "webhook_signature_invalid"
    assert (
        code_of(verifier, {**timestamped(), "X-Astrocyte-Timestamp": "yesterday"})
        == "webhook_signature_invalid"
    )


def test_github_form_needs_its_prefix_and_a_delivery_id() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    bare = {"X-Hub-Signature-256": sign(OLD, BODY).removeprefix("sha256="), "X-GitHub-Delivery": "gh-2"}
    assert code_of(verifier, bare) == "webhook_signature_invalid"
    assert code_of(verifier, github(delivery=None)) == "webhook_delivery_missing"
    assert code_of(WebhookVerifier([OLD], accept_github=False), github()) == "webhook_signature_invalid"


def test_rotated_secret_is_accepted_during_the_overlap() -> None:
    verifier = WebhookVerifier([OLD, NEW], clock=Clock())
    assert verifier.verify(timestamped(secret=OLD, delivery="a"), BODY)
    assert verifier.verify(timestamped(secret=NEW, delivery="b"), BODY)
    assert verifier.verify(github(secret=NEW, delivery="c"), BODY)
    verifier.rotate([NEW])  # the change is complete: the old secret stops working
    assert code_of(verifier, timestamped(secret=OLD, delivery="d")) == "webhook_signature_invalid"
    assert verifier.verify(timestamped(secret=NEW, delivery="e"), BODY)


def test_delivery_cache_is_bounded() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock(), delivery_cache_size=3)
    for i in range(10):
        verifier.verify(github(delivery=f"gh-{i}"), BODY)
    assert len(verifier._seen) == 3
    assert code_of(verifier, github(delivery="gh-9")) == "webhook_replayed"


def test_errors_and_logs_never_carry_secret_or_signature(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    verifier = WebhookVerifier([OLD], clock=Clock())
    forged = timestamped(secret="attacker")
    with pytest.raises(UnauthenticatedError) as caught:
        verifier.verify(forged, BODY)
    signature = forged["X-Astrocyte-Signature"].removeprefix("sha256=")
    rendered = repr(caught.value.to_dict()) + str(caught.value) + caplog.text
    assert OLD not in rendered and signature not in rendered


def webhook_source(**extra: object):
    return validate_source(
        "hooks",
        {
            "type": "stream",
            "driver": "astrocyte.ingest.webhook:WebhookDriver",
            "secrets": [OLD, NEW],
            **extra,
        },
    )


def test_webhook_settings_hide_secrets_and_reject_unknown_keys() -> None:
    source = webhook_source()
    assert OLD not in repr(source.driver_config)
    with pytest.raises(ConfigError, match=r"^sources\.hooks\.secret: Extra inputs are not permitted"):
        webhook_source(secret="x")


async def test_webhook_driver_stores_once_and_refuses_the_replay(memory_brain) -> None:
    source = webhook_source()
    driver = WebhookDriver("hooks", source.driver_config, sink=IngestSink.for_source(memory_brain, source))
    await driver.start()
    assert (await driver.health()).state == "running"
    outcome = await driver.handle(github(delivery="gh-77"), BODY)
    assert outcome.status == "stored"
    with pytest.raises(UnauthenticatedError) as caught:
        await driver.handle(github(delivery="gh-77"), BODY)
    assert caught.value.code == "webhook_replayed"
    with pytest.raises(ValidationError) as bad:
        await driver.handle(github(b"not json", delivery="gh-78"), b"not json")
    assert bad.value.code == "webhook_payload_invalid"
    assert driver.verifier.verify(github(b"not json", delivery="gh-78"), b"not json")  # released for a retry
    await driver.stop(1.0)
    assert (await driver.health()).state == "stopped"
    assert (await memory_brain.bank_stats("hooks")).memory_count == 1
