"""Over real sockets, against ``astrocyte-gateway`` (uvicorn with the guarded protocol) on a free port:
slow headers, short bodies and a flood of connections from one client are each bounded, and another
client is served meanwhile. Bounds are generous deadlines on the socket reads, not timing checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

FLOOD = 200
TIMEOUT_SECONDS = "2"


@pytest.fixture
def gateway(memory_config: Path, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "ASTROCYTE_HEADER_TIMEOUT_SECONDS": TIMEOUT_SECONDS,
        "ASTROCYTE_BODY_TIMEOUT_SECONDS": TIMEOUT_SECONDS,
        "ASTROCYTE_ACCESS_LOG": "false",
    }
    command = [
        sys.executable,
        "-m",
        "astrocyte_gateway.cli",
        "--port",
        str(port),
        "--config",
        str(memory_config),
    ]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # "listening" comes only once the app serves
            if "listening on" in line:
                break
        else:
            raise AssertionError(f"gateway exited with {process.wait()}")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    # The server may already have closed the connection (the per-client cap answers at once).
    with contextlib.suppress(ConnectionError, RuntimeError):
        if not writer.is_closing():
            writer.write(data)


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), timeout=30)
    except OSError:  # closed by the server while we were still writing to it
        return b"reset"


async def test_a_slow_header_flood_is_bounded_and_others_are_served(gateway: int) -> None:
    conns = []
    for _ in range(FLOOD):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
        _write(writer, b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        conns.append((reader, writer))
    stop = asyncio.Event()

    async def trickle() -> None:  # a byte a while on every connection, as a slowloris does
        while not stop.is_set():
            for _, writer in conns:
                _write(writer, b"a")
            await asyncio.sleep(0.25)

    trickling = asyncio.create_task(trickle())
    try:
        # Another client (another loopback address) is served during the flood.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport) as other:
            response = await other.get(f"http://127.0.0.1:{gateway}/live")
        assert response.status_code == 200
        answers = await asyncio.gather(*(_read_until_closed(reader) for reader, _ in conns))
    finally:
        stop.set()
        await trickling
        for _, writer in conns:
            writer.close()
    statuses = [
        answer[9:12] if answer.startswith(b"HTTP/1.1 ") else answer or b"closed" for answer in answers
    ]
    assert set(statuses) <= {b"408", b"429", b"reset"}, set(statuses)
    assert statuses.count(b"408") <= 64  # at most the per-client cap was ever held open
    assert statuses.count(b"408") >= 1 and any(b"request_timeout" in a for a in answers)


async def test_bodies_shorter_than_their_length_get_408(gateway: int) -> None:
    conns = []
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
        writer.write(
            b"POST /v1/retain HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"content": '
        )
        conns.append((reader, writer))
    answers = await asyncio.gather(*(_read_until_closed(reader) for reader, _ in conns))
    for _, writer in conns:
        writer.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
    # The server is still fine afterwards, and counted the 408s as such.
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{gateway}/metrics")).text
    assert 'route="/v1/retain",status="408"' in metrics
    assert 'status="500"' not in metrics and 'status="499"' not in metrics
