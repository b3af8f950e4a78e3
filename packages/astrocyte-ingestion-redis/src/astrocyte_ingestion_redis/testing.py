"""Test support shipped with the driver: a private redis-server and the ingest contract harness.

The core's contract kit finds the harness through :meth:`RedisStreamDriver.contract_harness`, so the
``contracts`` session tests this driver wherever it is installed. The server listens on 127.0.0.1 on
a free port it keeps across restarts, and persists with AOF and ``appendfsync always`` so every
acknowledged write survives a stop or a kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astrocyte.ingest.sink import Sink
from astrocyte.testing.ingest_contract import ContractMessage, IngestHarness
from redis.asyncio import Redis

from astrocyte_ingestion_redis.driver import RedisStreamDriver

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


class RedisServer:
    """One redis-server process (restartable on the same port and data directory)."""

    def __init__(
        self, binary: str, directory: Path, *, persistent: bool = True, tls_args: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.tls_args = tls_args  # with TLS the plain port is off and `port` is the TLS port
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        ports = (
            ["--port", "0", "--tls-port", str(self.port), *self.tls_args]
            if self.tls_args
            else ["--port", str(self.port)]
        )
        command = [
            self.binary, "--bind", HOST, *ports, "--dir", str(self.directory),
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str(self.directory / "redis.log"), *persistence,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not (port_open(self.port) if self.tls_args else ping(self.port)):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see {self.directory}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM: a clean shutdown; SIGKILL: a crash) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


# A restarted driver keeps the consumer name, so it re-reads what its predecessor left pending at
# once (replicas with generated names recover the same entries through XAUTOCLAIM instead).
CONSUMER = "contract-consumer"
GROUP = "contract"


class RedisHarness(IngestHarness):
    """Drives a private redis-server for the kit: a new stream and group per check."""

    def __init__(self, server: RedisServer, *, owns_server: bool = False) -> None:
        self.server = server
        self.owns_server = owns_server  # started in setup and stopped in teardown
        self.stream = ""
        self.client: Any = None  # redis.asyncio.Redis; its stubs type replies as bytes | str
        self.published = 0

    @property
    def dead_letters(self) -> str:
        return f"{self.stream}:dlq"

    @classmethod
    def from_env(cls) -> RedisHarness | None:
        """A harness on a private server from ``ASTROCYTE_TEST_REDIS_SERVER_BIN``, or None."""
        binary = os.environ.get("ASTROCYTE_TEST_REDIS_SERVER_BIN")
        if not binary:
            return None
        directory = Path(tempfile.mkdtemp(prefix="astrocyte-redis-contract-"))
        return cls(RedisServer(binary, directory), owns_server=True)

    async def setup(self) -> None:
        if self.owns_server and not self.server.running:
            await asyncio.to_thread(self.server.start)
        self.stream = f"contract-{uuid.uuid4().hex[:10]}"
        self.client = Redis.from_url(self.server.url)

    async def teardown(self) -> None:
        if not self.server.running:
            self.server.start()
        assert self.client is not None
        await self.client.delete(self.stream, self.dead_letters, f"{self.dead_letters}:seen")
        await self.client.aclose()
        if self.owns_server:
            await asyncio.to_thread(self.server.stop)

    def build_driver(self, sink: Sink) -> RedisStreamDriver:
        config = RedisStreamDriver.validate_config(
            {
                "url": self.server.url,
                "streams": [self.stream],
                "group": GROUP,
                "consumer": CONSUMER,
                "batch_size": 8,
                "block_ms": 100,
                "backoff_initial_ms": 20,
                "backoff_max_ms": 400,
                "stats_interval_s": 0.2,
            }
        )
        return RedisStreamDriver("contract", config, sink=sink)

    async def publish(self, messages: Sequence[ContractMessage]) -> list[str]:
        refs = []
        for message in messages:
            self.published += 1
            refs.append(await self._add(_encode(message, as_payload=self.published % 2 == 0)))
        return refs

    async def publish_poison(self, kind: str) -> str:
        fields = {
            "undecodable": {b"content": b"\xff\xfe\xfa not utf-8", b"bank_id": b"contract-bank"},
            "bad_json": {b"payload": b'{"content": '},
            "missing_bank": {b"content": b"no bank here"},
        }[kind]
        return await self._add(fields)

    async def dead_letter_refs(self) -> list[str]:
        assert self.client is not None
        entries = await self.client.xrange(self.dead_letters)
        return [fields[b"source_ref"].decode() for _, fields in entries]

    async def break_transport(self) -> None:
        await asyncio.to_thread(self.server.stop)

    async def restore_transport(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def replay(self) -> None:
        """Destroy the consumer group: the next driver recreates it at ``start_id`` 0 and reads
        the whole stream again."""
        assert self.client is not None
        await self.client.xgroup_destroy(self.stream, GROUP)

    async def break_dead_letters(self) -> None:
        """A string where the dead-letter stream goes: every dead-letter script fails (before it
        writes anything)."""
        assert self.client is not None
        await self.client.delete(self.dead_letters)
        await self.client.set(self.dead_letters, "not a stream")

    async def restore_dead_letters(self) -> None:
        assert self.client is not None
        await self.client.delete(self.dead_letters)

    async def _add(self, fields: dict[bytes, bytes]) -> str:
        assert self.client is not None
        entry_id = await self.client.xadd(self.stream, fields)
        return f"{self.stream}:{entry_id.decode()}"


def _encode(message: ContractMessage, *, as_payload: bool) -> dict[bytes, bytes]:
    """Half the messages in the fields form, half as a JSON payload."""
    if as_payload:
        body = {
            "content": message.content,
            "bank_id": message.bank_id,
            "tags": list(message.tags),
            "metadata": message.metadata,
        }
        return {b"payload": json.dumps(body).encode()}
    fields = {b"content": message.content.encode(), b"bank_id": message.bank_id.encode()}
    if message.tags:
        fields[b"tags"] = ",".join(message.tags).encode()
    if message.metadata:
        fields[b"metadata"] = json.dumps(message.metadata).encode()
    return fields
