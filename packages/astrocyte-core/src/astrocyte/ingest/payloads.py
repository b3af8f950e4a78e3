"""Webhook payload mappings: turn a verified delivery of a known sender into ingest messages.

The core's webhook driver understands one body shape of its own (``{"content": ...}``). A source
that receives another sender's events names a mapping instead::

    sources:
      github-hooks:
        type: stream
        driver: webhook
        secrets: ["${GITHUB_WEBHOOK_SECRET}"]
        payload: github               # entry point in astrocyte.webhook_payloads, or module:factory
        payload_options: {bank_template: "github:{owner}.{repo}"}

A mapping is a factory ``factory(options: Mapping) -> mapper`` (it validates ``options`` and raises
``ConfigError`` on a bad one, at start-up), where ``mapper(headers, body) -> Sequence[IngestMessage]``
raises ``ValidationError(code="webhook_payload_invalid")`` for a body it cannot read and returns
an empty sequence for an event it ignores. Packages register mappings so that a delivery and their
own poller produce the same message (bank, ``memory_key``, idempotency key, content) for the same
object, and the gateway never imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from astrocyte.ingest.sink import IngestMessage
from astrocyte.providers import load_class

__all__ = ["PAYLOADS", "PayloadMapper", "load_payload"]

PAYLOADS = "astrocyte.webhook_payloads"

PayloadMapper = Callable[[Mapping[str, str], bytes], Sequence[IngestMessage]]


def load_payload(name: str, options: Mapping[str, Any]) -> PayloadMapper:
    """Resolve the mapping ``name`` and build its mapper with ``options``."""
    factory: Any = load_class(PAYLOADS, name)
    mapper = factory(dict(options))
    if not callable(mapper):
        from astrocyte.errors import ConfigError

        raise ConfigError(
            f"webhook payload {name!r} did not build a callable mapper", code="provider_not_found"
        )
    return mapper  # type: ignore[no-any-return]
