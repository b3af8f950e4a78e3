"""The console script: flags override the environment, it prints where it listens, workers serve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
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


def _run_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "astrocyte_gateway.cli", *args]
    return subprocess.run(
        command, env={**os.environ, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_config", "config file not found"),
        ("unknown_store", "no provider named 'nosuch'"),
        ("uninstalled_driver", "no provider named 'nosuch-driver'"),
        ("no_access_control", "without access control"),
        ("port_in_use", "cannot listen on 127.0.0.1"),
    ],
)
def test_bad_start_up_is_one_line_and_exit_2(case: str, expected: str, tmp_path: Path) -> None:
    config = tmp_path / "astrocyte.yaml"
    config.write_text("store: memory\nembedder: hashing\n", encoding="utf-8")
    env: dict[str, str] = {}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1] if case == "port_in_use" else free_port()
        if case == "missing_config":
            config = tmp_path / "nope.yaml"
        elif case == "unknown_store":
            config.write_text("store: nosuch\nembedder: hashing\n", encoding="utf-8")
        elif case == "uninstalled_driver":
            config.write_text(
                "store: memory\nembedder: hashing\nsources:\n  s:\n    type: stream\n    driver: nosuch-driver\n",
                encoding="utf-8",
            )
        elif case == "no_access_control":
            env = {"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS": '{"k-0123456789abcdef": "user:a"}'}
        result = _run_cli(["--config", str(config), "--port", str(port)], tmp_path, **env)
    assert result.returncode == 2, result
    assert "listening" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("astrocyte-gateway: ") and expected in lines[0], lines
