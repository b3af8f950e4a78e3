"""The astrocyte-ingest worker: runs the supervisor over astrocyte.yaml, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_sigterm_stops_the_worker_process_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "astrocyte.yaml"
    config.write_text(
        "store: memory\n"
        "sources:\n"
        "  hooks:\n"
        "    type: stream\n"
        "    driver: astrocyte.ingest.webhook:WebhookDriver\n"
        "    secrets: [s3cret]\n"
    )
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
