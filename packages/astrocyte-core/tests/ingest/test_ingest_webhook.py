"""Webhook verification: the Standard Webhooks form, the GitHub form, replays, secret rotation."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from astrocyte.errors import ConfigError, UnauthenticatedError, ValidationError
from astrocyte.ingest.config import validate_source
from astrocyte.ingest.sink import IngestSink
from astrocyte.ingest.webhook import WebhookDriver, WebhookVerifier, secret_key, sign

NOW = 1_800_000_000
OLD, NEW = "old-secret-value", "new-secret-value"
BODY = json.dumps({"content": "deploy finished", "bank_id": "hooks"}).encode()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def standard(body: bytes = BODY, secret: str = OLD, ts: int = NOW, delivery: str = "msg_1") -> dict[str, str]:
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, body, ts, delivery),
    }


def github(body: bytes = BODY, secret: str = OLD, delivery: str | None = "gh-1") -> dict[str, str]:
    headers = {"X-Hub-Signature-256": sign(secret, body)}
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def code_of(verifier: WebhookVerifier, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(UnauthenticatedError) as caught:
        verifier.verify(headers, body)
    return caught.value.code


def test_standard_signature_verifies_and_keys_on_the_signed_id() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    delivery = verifier.verify(standard(), BODY)
    assert (delivery.form, delivery.delivery_id, delivery.idempotency_key) == ("standard", "msg_1", "msg_1")


def test_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks spec (and its reference libraries).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert WebhookVerifier([secret], clock=Clock(1614265330)).verify(headers, body).form == "standard"
    assert secret_key(secret) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_the_id_is_signed_so_a_replay_under_another_id_is_refused() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    captured = standard()
    for forged in (
        {**captured, "webhook-id": "msg_2"},
        {k: v for k, v in captured.items() if k != "webhook-id"},
    ):
        assert code_of(verifier, forged) == "webhook_signature_invalid"


def test_several_signatures_any_may_match() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    headers = standard()
    headers["webhook-signature"] = "v1,bm9wZQ== " + headers["webhook-signature"]
    assert verifier.verify(headers, BODY)


def test_header_names_are_case_insensitive_and_configurable() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock(), timestamp_header="X-Ts", signature_header="X-Sig")
    headers = {"WEBHOOK-ID": "msg_1", "x-ts": str(NOW), "x-sig": sign(OLD, BODY, NOW, "msg_1")}
    assert verifier.verify(headers, BODY).form == "standard"


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_stale_or_future_timestamp_is_refused(skew: int) -> None:
    verifier = WebhookVerifier([OLD], clock=Clock(NOW + skew))
    assert code_of(verifier, standard()) == "webhook_timestamp_stale"


def test_timestamp_at_the_window_edge_is_accepted() -> None:
    assert WebhookVerifier([OLD], clock=Clock(NOW + 300)).verify(standard(), BODY)
    assert WebhookVerifier([OLD], clock=Clock(NOW - 300)).verify(standard(), BODY)


def test_github_replay_under_another_or_no_delivery_id_has_the_same_key() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    keys = {verifier.verify(github(delivery=d), BODY).idempotency_key for d in ("gh-1", "gh-other", None)}
    assert len(keys) == 1 and next(iter(keys)).startswith("sha256:")


def test_tampered_body_timestamp_or_secret_is_refused() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    assert code_of(verifier, standard(), BODY + b" ") == "webhook_signature_invalid"
    assert code_of(verifier, {**standard(), "webhook-timestamp": str(NOW + 1)}) == "webhook_signature_invalid"
    assert code_of(verifier, standard(secret="guess")) == "webhook_signature_invalid"
    assert code_of(verifier, github(secret="guess")) == "webhook_signature_invalid"
    assert code_of(verifier, {}) == "webhook_signature_invalid"
    assert code_of(verifier, {**standard(), "webhook-timestamp": "yesterday"}) == "webhook_signature_invalid"


def test_github_form_needs_its_prefix() -> None:
    verifier = WebhookVerifier([OLD], clock=Clock())
    bare = {"X-Hub-Signature-256": sign(OLD, BODY).removeprefix("sha256="), "X-GitHub-Delivery": "gh-2"}
    assert code_of(verifier, bare) == "webhook_signature_invalid"
    assert code_of(WebhookVerifier([OLD], accept_github=False), github()) == "webhook_signature_invalid"


def test_rotated_secret_is_accepted_during_the_overlap() -> None:
    verifier = WebhookVerifier([OLD, NEW], clock=Clock())
    assert verifier.verify(standard(secret=OLD, delivery="a"), BODY)
    assert verifier.verify(standard(secret=NEW, delivery="b"), BODY)
    assert verifier.verify(github(secret=NEW, delivery="c"), BODY)
    verifier.rotate([NEW])  # the change is complete: the old secret stops working
    assert code_of(verifier, standard(secret=OLD, delivery="d")) == "webhook_signature_invalid"
    assert verifier.verify(standard(secret=NEW, delivery="e"), BODY)


def test_errors_and_logs_never_carry_secret_or_signature(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    verifier = WebhookVerifier([OLD], clock=Clock())
    forged = standard(secret="attacker")
    with pytest.raises(UnauthenticatedError) as caught:
        verifier.verify(forged, BODY)
    signature = forged["webhook-signature"].removeprefix("v1,")
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


async def test_webhook_driver_stores_a_replay_or_redelivery_once(memory_brain) -> None:
    source = webhook_source()
    driver = WebhookDriver("hooks", source.driver_config, sink=IngestSink.for_source(memory_brain, source))
    await driver.start()
    assert (await driver.health()).state == "running"
    assert (await driver.handle(github(delivery="gh-77"), BODY)).status == "stored"
    for delivery in ("gh-77", "gh-forged", None):  # redelivery, replay under a new id, and with none
        assert (await driver.handle(github(delivery=delivery), BODY)).status == "duplicate"
    with pytest.raises(ValidationError) as bad:
        await driver.handle(github(b"not json", delivery="gh-78"), b"not json")
    assert bad.value.code == "webhook_payload_invalid"
    await driver.stop(1.0)
    assert (await driver.health()).state == "stopped"
    assert (await memory_brain.bank_stats("hooks")).memory_count == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"content": "x", "principal": 7}',
        b'{"content": "x", "metadata": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001,
        b'{"content": 5}',
        b'{"content": "x", "tags": "not-a-list"}',
        b'{"content": "x", "occurred_at": "yesterday"}',
        b'{"content": "x", "metadata": {"v": NaN}}',
        b'["content"]',
        b"\xff\xfe",
    ],
)
async def test_every_bad_signed_body_is_a_payload_error(memory_brain, body: bytes) -> None:
    source = webhook_source()
    driver = WebhookDriver("hooks", source.driver_config, sink=IngestSink.for_source(memory_brain, source))
    with pytest.raises(ValidationError) as bad:
        await driver.handle(github(body), body)
    assert bad.value.code == "webhook_payload_invalid"
