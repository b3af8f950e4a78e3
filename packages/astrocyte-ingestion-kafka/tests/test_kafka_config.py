"""The source schema: bad keys are named, incomplete security fails closed, secrets come from env."""

from __future__ import annotations

import pytest
from astrocyte.errors import ConfigError
from astrocyte.ingest.config import validate_source
from astrocyte_ingestion_kafka.config import KafkaSourceConfig, Security
from astrocyte_ingestion_kafka.connection import security_options
from astrocyte_ingestion_kafka.driver import KafkaStreamDriver

BASE = {"bootstrap_servers": ["127.0.0.1:9092"], "topics": ["events"]}


def bad(path: str, **keys: object) -> None:
    with pytest.raises(ConfigError) as caught:
        KafkaStreamDriver.validate_config({**BASE, **keys})
    assert caught.value.details["path"].startswith(path), caught.value


def test_defaults_are_safe() -> None:
    config = KafkaStreamDriver.validate_config(BASE)
    assert config.start_offset == "earliest" and config.security.protocol == "PLAINTEXT"
    assert config.dead_letter_for("events") == "events.dlq"
    assert config.idempotency_key.source == "offset"


def test_found_by_entry_point_and_validated_by_the_core() -> None:
    source = validate_source("orders", {"type": "stream", "driver": "kafka", **BASE})
    assert source.driver_class is KafkaStreamDriver
    assert isinstance(source.driver_config, KafkaSourceConfig)
    with pytest.raises(ConfigError, match=r"sources\.orders\.batchsize"):
        validate_source("orders", {"type": "stream", "driver": "kafka", **BASE, "batchsize": 5})


def test_topics_or_pattern() -> None:
    bad("topic_pattern", topics=[])
    bad("topic_pattern", topic_pattern="events.*")
    bad("topics", topics=["a b"])
    config = KafkaStreamDriver.validate_config({**BASE, "topics": [], "topic_pattern": "orders-.*"})
    assert config.topic_pattern == "orders-.*"


def test_dead_letters_need_their_own_topic() -> None:
    bad("dead_letter_topic", dead_letter_topic="events")
    bad("dead_letter_topic", topics=[], topic_pattern="ev.*", dead_letter_topic="events-dlq")


def test_bounds_and_orders() -> None:
    bad("batch_size", batch_size=0)
    bad("max_in_flight_per_partition", max_in_flight_per_partition=0)
    bad("backoff_max_ms", backoff_initial_ms=500, backoff_max_ms=100)
    bad("heartbeat_interval_ms", session_timeout_ms=6000, heartbeat_interval_ms=3000)
    bad("bootstrap_servers", bootstrap_servers=["no-port"])
    bad("start_offset", start_offset="middle")
    bad("mapping.bank", mapping={"bank": "@timestamp"})
    bad("idempotency_key", idempotency_key={"source": "header"})


@pytest.mark.parametrize(
    "security",
    [
        {"protocol": "SASL_SSL"},  # no mechanism or credentials
        {"protocol": "SASL_PLAINTEXT", "mechanism": "PLAIN", "username_env": "U"},
        {"protocol": "PLAINTEXT", "mechanism": "PLAIN", "username_env": "U", "password_env": "P"},
        {"protocol": "PLAINTEXT", "ca_file": "/ca.pem"},
        {"protocol": "SSL", "cert_file": "/c.pem"},  # a certificate without its key
        {
            "protocol": "SASL_SSL",
            "mechanism": "GSSAPI",
            "username_env": "U",
            "password_env": "P",
        },  # unsupported
    ],
)
def test_incomplete_security_is_refused(security: dict[str, str]) -> None:
    bad("security", security=security)


def test_sasl_credentials_come_from_the_environment() -> None:
    security = Security(
        protocol="SASL_PLAINTEXT", mechanism="SCRAM-SHA-512", username_env="KU", password_env="KP"
    )
    options = security_options(security, {"KU": "ingest", "KP": "s3cret"})
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ingest",
        "sasl_plain_password": "s3cret",
    }
    with pytest.raises(ConfigError) as caught:
        security_options(security, {"KU": "ingest"})
    assert caught.value.code == "kafka_credentials_missing"
    assert "KP" in caught.value.message and "s3cret" not in caught.value.message


def test_ssl_builds_a_verifying_context() -> None:
    options = security_options(Security(protocol="SSL"), {})
    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL" and context.check_hostname


async def test_missing_secret_fails_the_driver_at_start() -> None:
    config = KafkaStreamDriver.validate_config(
        {
            **BASE,
            "security": {
                "protocol": "SASL_SSL",
                "mechanism": "PLAIN",
                "username_env": "NO_SUCH_U",
                "password_env": "NO_SUCH_P",
            },
        }
    )
    driver = KafkaStreamDriver("s", config, sink=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="NO_SUCH_U"):
        await driver.start()
    assert (await driver.health()).state == "failed"
