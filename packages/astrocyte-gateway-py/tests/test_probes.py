"""Probes: /live touches nothing, /health is 503 with the store down, /health/ingest is 503 when a
required source is unhealthy (error text only for admins), /metrics is Prometheus text."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from astrocyte import Astrocyte
from astrocyte.ingest.driver import DriverConfig, DriverHealth
from astrocyte.testing import service_env
from conftest import serve


class TcpRelay:
    """A loopback TCP relay in front of a real server; stopping it is the server going away."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def relayed_postgres(dsn: str) -> AsyncIterator[tuple[TcpRelay, str]]:
    parts = urlsplit(dsn)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    netloc = f"{parts.username}@127.0.0.1:{relay.port}" if parts.username else f"127.0.0.1:{relay.port}"
    try:
        yield relay, urlunsplit(parts._replace(netloc=netloc))
    finally:
        with contextlib.suppress(Exception):
            await relay.stop()


async def test_live_and_health_when_all_is_well(client: httpx.AsyncClient) -> None:
    assert (await client.get("/live")).json() == {"status": "ok"}
    health = await client.get("/health")
    assert health.status_code == 200
    assert {c["name"] for c in health.json()["components"]} >= {"store", "embedder"}


async def test_health_is_503_with_the_store_down() -> None:
    dsn = service_env("ASTROCYTE_TEST_POSTGRES_DSN")
    async with relayed_postgres(dsn) as (relay, relayed_dsn):
        config = {
            "store": "postgres",
            "store_config": {"dsn": relayed_dsn, "schema": "gateway_health_test", "command_timeout": 2},
            "embedder": "hashing",
        }
        async with (
            Astrocyte.from_dict(config) as engine,
            serve({"ASTROCYTE_ADMIN_TOKEN": "t"}, engine) as (http, _),
        ):
            assert (await http.get("/health")).status_code == 200
            await relay.stop()
            down = await http.get("/health")
            assert down.status_code == 503, down.text
            store = down.json()["components"][0]  # the store is reported first, under its own name
            assert store["healthy"] is False and store["detail"] is None  # details are for admins
            as_admin = await http.get("/health", headers={"X-Admin-Token": "t"})
            assert "unreachable" in as_admin.json()["components"][0]["detail"]
            assert (await http.get("/live")).status_code == 200


class BrokenDriverConfig(DriverConfig):
    reason: str = "cannot reach broker at 10.0.0.1:9092"


class BrokenDriver:
    """A real driver whose transport never comes up (reports failed)."""

    source_type: ClassVar[str] = "stream"

    def __init__(self, source_id: str, config: BrokenDriverConfig, *, sink: Any) -> None:
        self.source_id, self.config = source_id, config

    @classmethod
    def validate_config(cls, mapping: Any) -> BrokenDriverConfig:
        return BrokenDriverConfig(**mapping)

    async def start(self) -> None:
        raise ConnectionError(self.config.reason)

    async def stop(self, deadline: float) -> None:
        return None

    async def health(self) -> DriverHealth:
        return DriverHealth("failed", detail=self.config.reason)


async def test_health_ingest_is_503_when_a_required_source_is_down() -> None:
    config = {
        "store": "memory",
        "embedder": "hashing",
        "sources": {
            "events": {
                "type": "stream",
                "driver": f"{__name__}:BrokenDriver",
                "required": True,
                "bank_id": "b",
            },
        },
    }
    async with (
        Astrocyte.from_dict(config) as engine,
        serve({"ASTROCYTE_ADMIN_TOKEN": "t"}, engine) as (http, _),
    ):
        admin_view: dict[str, Any] = {}
        for _ in range(100):  # the supervisor polls its drivers about once a second
            admin = await http.get("/v1/admin/sources", headers={"X-Admin-Token": "t"})
            admin_view = admin.json()["sources"]["events"]
            if admin_view["last_error"]:
                break
            await asyncio.sleep(0.05)
        assert "10.0.0.1" in admin_view["last_error"]
        response = await http.get("/health/ingest")
        assert response.status_code == 503
        source = response.json()["sources"]["events"]
        assert source["required"] is True and source["healthy"] is False
        assert source["last_error"] is None  # error text only for admins
        as_admin = await http.get("/health/ingest", headers={"X-Admin-Token": "t"})
        assert "10.0.0.1" in as_admin.json()["sources"]["events"]["last_error"]


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/live")
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'astrocyte_gateway_requests_total{method="GET",route="/live",status="200"}' in response.text
