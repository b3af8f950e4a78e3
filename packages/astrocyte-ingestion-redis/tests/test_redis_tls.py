"""rediss:// with mutual TLS against a real TLS redis-server (certificates made by the test)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from astrocyte.testing.ingest_contract import ContractSink
from astrocyte_ingestion_redis import RedisStreamDriver
from astrocyte_ingestion_redis.testing import RedisServer
from redis.asyncio import Redis

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _write_pair(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_certificates(directory: Path) -> None:
    """ca.pem; server.pem/.key and client.pem/.key signed by it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("astrocyte test CA", ca_key, None, ca_key)
    _write_pair(directory, "ca", ca, ca_key)
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write_pair(directory, name, _certificate(f"astrocyte {name}", key, ca, ca_key), key)


@pytest.fixture
def tls_server(redis_bin: str, tmp_path: Path) -> Iterator[RedisServer]:
    make_certificates(tmp_path)
    tls_args = (
        "--tls-cert-file", str(tmp_path / "server.pem"), "--tls-key-file", str(tmp_path / "server.key"),
        "--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "yes",
    )  # fmt: skip
    server = RedisServer(redis_bin, tmp_path / "redis", persistent=False, tls_args=tls_args)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"this redis-server has no TLS support: {exc}")
    yield server
    server.stop()


async def test_mutual_tls(tls_server: RedisServer, tmp_path: Path) -> None:
    url = f"rediss://127.0.0.1:{tls_server.port}/0"
    tls = {
        "ca_file": str(tmp_path / "ca.pem"),
        "cert_file": str(tmp_path / "client.pem"),
        "key_file": str(tmp_path / "client.key"),
    }
    sink = ContractSink()
    config = RedisStreamDriver.validate_config(
        {"url": url, "tls": tls, "streams": ["secure"], "block_ms": 100, "stats_interval_s": 0.1}
    )
    driver = RedisStreamDriver("secure", config, sink=sink)
    task = asyncio.create_task(driver.start())
    producer = Redis.from_url(
        url, ssl_ca_certs=tls["ca_file"], ssl_certfile=tls["cert_file"], ssl_keyfile=tls["key_file"]
    )
    try:
        await producer.xadd("secure", {"content": "over TLS", "bank_id": "tls"})
        deadline = time.monotonic() + 15
        while sink.stored_contents["over TLS"] != 1:
            assert time.monotonic() < deadline, f"not stored; health: {await driver.health()}"
            await asyncio.sleep(0.05)
        assert (await driver.health()).state == "running"
    finally:
        await producer.aclose()
        await driver.stop(2.0)
        await task


async def test_an_untrusted_server_certificate_keeps_the_driver_degraded(
    tls_server: RedisServer, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_certificates(other)  # a CA that did not sign the server's certificate
    tls = {
        "ca_file": str(other / "ca.pem"),
        "cert_file": str(other / "client.pem"),
        "key_file": str(other / "client.key"),
    }
    config = RedisStreamDriver.validate_config(
        {
            "url": f"rediss://127.0.0.1:{tls_server.port}/0",
            "tls": tls,
            "streams": ["secure"],
            "backoff_max_ms": 200,
        }
    )
    driver = RedisStreamDriver("secure", config, sink=ContractSink())
    task = asyncio.create_task(driver.start())
    try:
        deadline = time.monotonic() + 10
        while (health := await driver.health()).state != "degraded":
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.05)
        assert "certificate" in (health.detail or "").lower() or "ssl" in (health.detail or "").lower()
    finally:
        await driver.stop(1.0)
        await task
