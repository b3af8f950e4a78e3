"""The console script: flags override the environment, it prints where it listens, workers serve."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import free_port


def test_console_script_serves_with_two_workers(memory_config: Path, tmp_path: Path) -> None:
    port = free_port()
    script = Path(sys.executable).with_name("astrocyte-gateway")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "astrocyte_gateway.cli"]
    env = {**os.environ, "ASTROCYTE_PORT": "1", "ASTROCYTE_CONFIG_PATH": "/nonexistent.yaml"}
    process = subprocess.Popen(
        [*command, "--port", str(port), "--config", str(memory_config), "--workers", "2"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in first_line
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/v1/retain", json={"content": "x", "bank_id": "b"}
                )
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert response.status_code == 200, response.text
    finally:
        process.terminate()
        process.wait(timeout=15)
