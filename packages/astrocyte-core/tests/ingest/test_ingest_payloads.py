"""Webhook payload mappings: a source naming ``payload`` hands verified bodies to the mapping."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from astrocyte import Astrocyte
from astrocyte.errors import ConfigError
from astrocyte.ingest.sink import IngestMessage, IngestSink
from astrocyte.ingest.webhook import WebhookDriver, sign


def shouting(options: Mapping[str, Any]) -> Any:
    """A mapping factory for the tests: upper-cases ``text``; an event ``skip`` maps to nothing."""
    if set(options) - {"bank"}:
        raise ConfigError("unknown option")

    def mapper(headers: Mapping[str, str], body: bytes) -> Sequence[IngestMessage]:
        payload = json.loads(body)
        if payload.get("event") == "skip":
            return []
        return [IngestMessage(payload["id"], payload["text"].upper(), bank_id=options.get("bank", "loud"))]

    return mapper


def _driver(engine: Astrocyte, **options: Any) -> WebhookDriver:
    config = WebhookDriver.validate_config(
        {"secrets": ["s"], "payload": f"{__name__}:shouting", "payload_options": options}
    )
    return WebhookDriver("hooks", config, sink=IngestSink(engine, source_id="hooks"))


async def _send(driver: WebhookDriver, payload: dict[str, Any], delivery: str) -> Any:
    body = json.dumps(payload).encode()
    return await driver.handle({"X-Hub-Signature-256": sign("s", body), "X-GitHub-Delivery": delivery}, body)


async def test_a_mapped_delivery_is_retained_as_the_mapping_says(memory_brain: Astrocyte) -> None:
    driver = _driver(memory_brain, bank="mapped")
    outcome = await _send(driver, {"id": "obj-1", "text": "hello"}, "d1")
    assert outcome.status == "stored"
    [hit] = (await memory_brain.recall("HELLO", bank_id="mapped")).hits
    assert hit.text == "HELLO"
    skipped = await _send(driver, {"event": "skip"}, "d2")
    assert (skipped.status, skipped.code) == ("duplicate", "ignored")


def test_a_bad_mapping_or_option_stops_start_up() -> None:
    with pytest.raises(ConfigError):
        WebhookDriver.validate_config(
            {"secrets": ["s"], "payload": f"{__name__}:shouting", "payload_options": {"x": 1}}
        )
    with pytest.raises(ConfigError):
        WebhookDriver.validate_config({"secrets": ["s"], "payload": "no-such-mapping"})
