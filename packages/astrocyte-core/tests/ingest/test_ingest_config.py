"""Source config: common keys here, driver keys through the driver's own schema."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from astrocyte.errors import ConfigError
from astrocyte.ingest import metrics as metrics_mod
from astrocyte.ingest.config import validate_source, validate_sources
from astrocyte.ingest.driver import load_driver_class
from ingest_reference_driver import QueueDriverConfig
from prometheus_client import CollectorRegistry

QUEUE = "ingest_reference_driver:QueueDriver"


def source(**keys: Any) -> dict[str, Any]:
    return {"type": "stream", "driver": QUEUE, "transport": "t", **keys}


def error_of(mapping: Any, source_id: str = "events") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        validate_sources({source_id: mapping})
    return caught.value


def test_valid_source_splits_common_and_driver_keys() -> None:
    parsed = validate_sources(
        {
            "events": source(
                batch_size=3,
                principal="service:ingest",
                trust_message_principals=["user:*"],
                required=True,
                bank_id="shared",
                bank_template="user-{user}",
            )
        }
    )["events"]
    assert isinstance(parsed.driver_config, QueueDriverConfig)
    assert parsed.driver_config.batch_size == 3 and parsed.required and parsed.bank_id == "shared"
    assert parsed.principal_policy.trusts("user:alice") and not parsed.principal_policy.trusts("agent:x")


def test_principal_defaults_to_the_source_service() -> None:
    assert validate_source("events", source()).principal == "service:events"
    assert validate_sources(None) == {}


@pytest.mark.parametrize(
    ("mapping", "path", "code"),
    [
        (source(batchsize=3), "sources.events.batchsize", "config_invalid"),
        ({"type": "stream", "driver": QUEUE}, "sources.events.transport", "config_invalid"),
        (source(batch_size="many"), "sources.events.batch_size", "config_invalid"),
        (source(type="push"), "sources.events.type", "config_invalid"),
        (source(principal="ingest"), "sources.events.principal", "config_invalid"),
        (source(trust_message_principals=["*"]), "sources.events.trust_message_principals", "config_invalid"),
        (source(bank_template="user-{0}"), "sources.events.bank_template", "config_invalid"),
        (source(driver="no-such-driver"), "sources.events.driver", "provider_not_found"),
        (source(driver="ingest_test_drivers:NoSchemaDriver"), "sources.events.driver", "provider_not_found"),
        (source(type="poll"), "sources.events.driver", "config_invalid"),
        ("not a mapping", "sources.events", "config_invalid"),
    ],
)
def test_errors_name_the_dotted_key(mapping: Any, path: str, code: str) -> None:
    error = error_of(mapping)
    assert str(error).startswith(f"{path}:"), str(error)
    assert error.details["path"].startswith(path)
    assert error.code == code


def test_bad_source_id_is_refused() -> None:
    assert str(error_of(source(), source_id="has/slash")).startswith("sources.has/slash:")


def test_poll_driver_loads_from_the_poll_group() -> None:
    cls = load_driver_class("poll", "ingest_test_drivers:PollOnlyDriver")
    assert cls.source_type == "poll"
    with pytest.raises(ConfigError, match="is a poll driver, not a stream driver"):
        load_driver_class("stream", "ingest_test_drivers:PollOnlyDriver")


def test_metrics_register_once_per_registry() -> None:
    registry = CollectorRegistry()
    first = metrics_mod.ingest_metrics(registry)
    assert metrics_mod.ingest_metrics(registry) is first
    metrics_mod._BY_REGISTRY.clear()  # as after a module reload: the collectors already exist
    again = metrics_mod.ingest_metrics(registry)
    assert again.messages is first.messages and again.batch_seconds is first.batch_seconds
    again.record_outcomes("s", ["stored", "stored", "failed"])
    assert (
        registry.get_sample_value("astrocyte_ingest_messages_total", {"source": "s", "outcome": "stored"})
        == 2
    )


def test_a_new_registry_never_gets_a_collected_ones_collectors() -> None:
    # CPython hands a collected registry's id() to the next one made, usually at once; keyed by
    # id(), the new registry got the dead one's collectors and its samples never appeared (two CI
    # failures of supervisor tests, "saw None").
    seen_ids = set()
    for _ in range(50):
        registry = CollectorRegistry()
        seen_ids.add(id(registry))
        metrics_mod.ingest_metrics(registry).record_outcomes("s", ["stored"])
        sample = registry.get_sample_value(
            "astrocyte_ingest_messages_total", {"source": "s", "outcome": "stored"}
        )
        assert sample == 1
        del registry
        gc.collect()
    assert len(seen_ids) < 50  # an id was reused, so the old keying would have failed here
    assert len(metrics_mod._BY_REGISTRY) <= 1  # a collected registry's entry went with it
