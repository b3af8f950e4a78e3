"""Fixtures: a real engine (memory store, hashing embedder), the app served in-process over ASGI,
and real uvicorn subprocesses on 127.0.0.1 for what only a socket can show."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from astrocyte import Astrocyte
from astrocyte_gateway import Settings, create_app
from fastapi import FastAPI

# Access control explicitly off: the auth tests are about authentication (outside dev mode, the
# gateway refuses to start with access control merely left unset).
MEMORY_CONFIG = {"store": "memory", "embedder": "hashing", "access_control": {"enabled": False}}
PEER = ("127.0.0.1", 50_000)


@pytest.fixture
async def brain() -> AsyncIterator[Astrocyte]:
    async with Astrocyte.from_dict(MEMORY_CONFIG) as engine:
        yield engine


@contextlib.asynccontextmanager
async def serve(
    env: Mapping[str, str] | None = None,
    brain: Any = None,
    client: tuple[str, int] = PEER,
    settings: Settings | None = None,
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The gateway app with its lifespan running, and an httpx client speaking ASGI to it."""
    app = create_app(settings or Settings.from_env(dict(env or {})), brain=brain)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


@pytest.fixture
async def client(brain: Astrocyte) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(brain=brain) as (http, _app):
        yield http


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Every error is ``{"detail", "code", "request_id"}`` and the id is echoed in X-Request-ID."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"detail", "code", "request_id"}, body
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def memory_config(tmp_path: Path) -> Path:
    path = tmp_path / "astrocyte.yaml"
    path.write_text("store: memory\nembedder: hashing\n", encoding="utf-8")
    return path


class GatewayProcess:
    """``uvicorn astrocyte_gateway.app:create_app --factory`` in a subprocess."""

    def __init__(self, env: Mapping[str, str], host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "astrocyte_gateway.app:create_app",
            "--factory",
            "--host",
            host,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {output}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/live", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError("gateway did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def gateway_process() -> Iterator[Any]:
    """Factory starting gateway subprocesses, all stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def start(env: Mapping[str, str], host: str = "127.0.0.1") -> GatewayProcess:
        process = GatewayProcess(env, host)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()
