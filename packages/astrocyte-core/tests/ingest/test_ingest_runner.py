"""The astrocyte-ingest worker: runs the supervisor over astrocyte.yaml, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from astrocyte.ingest.runner import main, run_ingest
from ingest_reference_driver import TRANSPORTS, LogTransport


@pytest.mark.parametrize("freeze", [False, True], ids=["plain", "start-up-frozen"])
async def test_worker_ingests_until_told_to_stop(tmp_path: Path, freeze: bool) -> None:
    config = tmp_path / "astrocyte.yaml"
    config.write_text(
        "store: memory\n"
        "sources:\n"
        "  events:\n"
        "    type: stream\n"
        "    driver: ingest_reference_driver:QueueDriver\n"
        "    transport: runner-log\n"
        "    bank_id: runner-bank\n"
    )
    transport = TRANSPORTS["runner-log"] = LogTransport("runner-log")
    try:
        for i in range(5):
            transport.append(json.dumps({"content": f"worker fact {i}"}).encode())
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_ingest(str(config), stop=stop, drain_seconds=2.0, freeze_start_up=freeze)
        )
        deadline = time.monotonic() + 10
        while transport.committed < 5 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another task's state
            await asyncio.sleep(0.05)
        assert (gc.get_freeze_count() > 0) is freeze  # the console script freezes its start-up objects
        stop.set()
        assert await asyncio.wait_for(worker, timeout=10) == 0
    finally:
        TRANSPORTS.pop("runner-log")
        gc.unfreeze()
    assert transport.committed == 5 and transport.dead_letters == []


def test_missing_config_or_sources_exit_with_code_2(tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tmp_path / "absent.yaml")]) == 2
    assert "astrocyte-ingest:" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("store: memory\n")
    assert main(["--config", str(empty)]) == 2


def _webhook_config(tmp_path: Path) -> Path:
    """A config whose one source (the passive webhook driver) needs no transport."""
    config = tmp_path / "astrocyte.yaml"
    config.write_text(
        "store: memory\n"
        "sources:\n"
        "  hooks:\n"
        "    type: stream\n"
        "    driver: astrocyte.ingest.webhook:WebhookDriver\n"
        "    secrets: [s3cret]\n"
    )
    return config


def test_sigterm_stops_the_worker_process_cleanly(tmp_path: Path) -> None:
    config = _webhook_config(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "astrocyte.ingest.runner", "--config", str(config), "--drain-seconds", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "ingesting from hooks" in line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until(what: str, probe: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_worker_probes_follow_the_required_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/live always answers; /health is the gateway's /health/ingest view: 503 until every required
    source consumes, 200 while only an optional one is down; error text only with the admin token;
    poison the driver dead-lettered is counted as rejected in /health and /metrics."""
    config = tmp_path / "astrocyte.yaml"
    config.write_text(
        "store: memory\n"
        "sources:\n"
        "  probe-required:\n"
        "    type: stream\n"
        "    driver: ingest_reference_driver:QueueDriver\n"
        "    transport: probe-required\n"
        "    bank_id: probe-bank\n"
        "    required: true\n"
        "  probe-optional:\n"
        "    type: stream\n"
        "    driver: ingest_reference_driver:QueueDriver\n"
        "    transport: probe-optional\n"
        "    bank_id: probe-bank\n"
    )
    monkeypatch.setenv("ASTROCYTE_ADMIN_TOKEN", "worker-admin-token")
    required = TRANSPORTS["probe-required"] = LogTransport("probe-required")
    optional = TRANSPORTS["probe-optional"] = LogTransport("probe-optional")
    required.broken = optional.broken = True
    required.append(json.dumps({"content": "a valid fact"}).encode())
    required.append(b'{"content": ')  # poison: bad JSON
    port, stop = _free_port(), asyncio.Event()
    worker = asyncio.create_task(run_ingest(str(config), stop=stop, drain_seconds=2.0, metrics_port=port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http:

            async def health_status(wanted: int) -> bool:
                try:
                    return (await http.get("/health")).status_code == wanted
                except httpx.TransportError:  # not bound yet
                    return False

            await _until("/health 503 while the required source cannot consume", lambda: health_status(503))
            assert (await http.get("/live")).json() == {"status": "ok"}
            down = (await http.get("/health")).json()
            assert down["ready"] is False and down["sources"]["probe-required"]["healthy"] is False
            assert down["sources"]["probe-required"]["detail"] is None  # no error text without the token
            as_admin = await http.get("/health", headers={"X-Admin-Token": "worker-admin-token"})
            assert "unreachable" in as_admin.json()["sources"]["probe-required"]["detail"]

            required.broken = False
            await _until("/health 200 once the required source consumes", lambda: health_status(200))
            body = (await http.get("/health/ingest")).json()
            assert body["ready"] is True and body["sources"]["probe-optional"]["state"] == "degraded"

            async def counted() -> bool:
                sources = (await http.get("/health")).json()["sources"]
                return sources["probe-required"]["counters"]["rejected"] == 1

            await _until("the poison counted as rejected", counted)
            metrics = (await http.get("/metrics")).text
            assert (
                'astrocyte_ingest_messages_total{outcome="rejected",source="probe-required"} 1.0' in metrics
            )
            assert 'astrocyte_ingest_messages_total{outcome="stored",source="probe-required"} 1.0' in metrics
            assert (await http.get("/nowhere")).status_code == 404
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, timeout=10) == 0
        TRANSPORTS.pop("probe-required")
        TRANSPORTS.pop("probe-optional")
    assert required.dead_letters == [("probe-required:1", "bad_json")]


async def test_worker_refuses_a_probe_port_in_use(tmp_path: Path) -> None:
    config = _webhook_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert await run_ingest(str(config), metrics_port=port, stop=asyncio.Event()) == 2
