"""The config schema, as the core validates it through the ``redis`` entry point."""

from __future__ import annotations

import os
import re

import pytest
from astrocyte.errors import ConfigError
from astrocyte.ingest.config import validate_source
from astrocyte.testing.ingest_contract import ContractSink
from astrocyte_ingestion_redis import RedisStreamConfig, RedisStreamDriver
from astrocyte_ingestion_redis.connection import credentials, tls_options


def source(**keys: object) -> dict[str, object]:
    return {"type": "stream", "driver": "redis", "streams": ["events"], **keys}


def test_the_entry_point_validates_a_source_with_defaults() -> None:
    validated = validate_source("events", source(url="rediss://cache.internal:6380/2", bank_id="shared"))
    assert validated.driver_class is RedisStreamDriver
    config = validated.driver_config
    assert isinstance(config, RedisStreamConfig)
    assert (config.group, config.start_id, config.batch_size, config.max_deliveries) == (
        "astrocyte",
        "0",
        500,
        10,
    )
    assert config.dead_letter_for("events") == "events:dlq"
    assert config.claim_interval_s == 30.0
    assert validated.bank_id == "shared"


@pytest.mark.parametrize(
    ("keys", "path", "text"),
    [
        ({"bogus": 1}, "sources.events.bogus", "Extra inputs"),
        ({"url": "http://localhost"}, "sources.events.url", "redis://"),
        ({"streams": []}, "sources.events.streams", "at least 1"),
        ({"streams": ["a", "a"]}, "sources.events.streams", "listed twice"),
        ({"start_id": "latest"}, "sources.events.start_id", "entry id"),
        ({"batch_size": 0}, "sources.events.batch_size", "greater than or equal"),
        ({"tls": {"ca_file": "/ca.pem"}}, "sources.events.tls", "rediss://"),
        ({"dead_letter_stream": "{stream}"}, "sources.events.dead_letter_stream", "source stream"),
        ({"username": "a", "username_env": "B"}, "sources.events.username_env", "not both"),
        ({"backoff_initial_ms": 500, "backoff_max_ms": 100}, "sources.events.backoff_max_ms", "smaller"),
        ({"fields": {"format": "xml"}}, "sources.events.fields.format", "auto"),
        ({"consumer": "has space"}, "sources.events.consumer", "whitespace"),
    ],
)
def test_bad_keys_name_their_path(keys: dict[str, object], path: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_source("events", source(**keys))
    assert caught.value.details["path"] == path
    assert text in caught.value.message


def test_consumer_names_are_unique_per_replica_by_default() -> None:
    config = RedisStreamDriver.validate_config({"streams": ["events"]})
    first = RedisStreamDriver("events", config, sink=ContractSink())
    second = RedisStreamDriver("events", config, sink=ContractSink())
    assert re.fullmatch(rf".+-{os.getpid()}-[0-9a-f]{{6}}", first.consumer)
    assert first.consumer != second.consumer
    named = RedisStreamDriver.validate_config({"streams": ["events"], "consumer": "pod-0"})
    assert RedisStreamDriver("events", named, sink=ContractSink()).consumer == "pod-0"


def test_acl_credentials_come_from_the_environment() -> None:
    config = RedisStreamConfig(streams=("events",), username_env="R_USER", password_env="R_PASS")
    assert credentials(config, {"R_USER": "ingest", "R_PASS": "s3cret"}) == {
        "username": "ingest",
        "password": "s3cret",
    }
    with pytest.raises(ConfigError) as caught:
        credentials(config, {"R_USER": "ingest"})
    assert caught.value.code == "redis_credentials_missing" and "R_PASS" in caught.value.message
    assert "s3cret" not in repr(config)


def test_tls_options_map_to_the_client() -> None:
    config = RedisStreamConfig(
        url="rediss://cache:6380",
        streams=("events",),
        tls={"ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem", "verify": False},
    )
    assert tls_options(config) == {
        "ssl_ca_certs": "/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
        "ssl_cert_reqs": "none",
        "ssl_check_hostname": False,
    }
    assert tls_options(RedisStreamConfig(streams=("events",))) == {}
