"""Redis: the Debian `redis-server` binary, our own instance on 127.0.0.1, no persistence."""

from __future__ import annotations

import shutil
import socket

from svc_base import Daemon
from svc_common import HOST, ServiceError, deb_installed, pick_port, say, wait_ready


def _redis_bin() -> str | None:
    return shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")


def redis_ping(port: int, timeout: float = 1.0) -> bool:
    """PING over RESP; True only for a real +PONG."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Redis(Daemon):
    name = "redis"
    start_timeout = 20.0

    def missing_debs(self) -> list[str]:
        if _redis_bin() is None and not deb_installed("redis-server"):
            return ["redis-server"]
        return []

    def marker(self, state: dict) -> str:
        # redis-server rewrites its process title to "redis-server 127.0.0.1:PORT".
        return f"{HOST}:{state.get('port')}"

    def probe(self, state: dict) -> bool:
        return redis_ping(int(state.get("port") or 0))

    def start(self, state: dict) -> dict:
        binary = _redis_bin()
        if binary is None:
            raise ServiceError("redis-server binary not found after install", self.log)
        port = pick_port(state.get("port"))
        cmd = [
            binary,
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            "",
            "--protected-mode",
            "no",
        ]
        state.update(port=port, bin=binary)
        proc = self.launch(cmd, state)
        wait_ready(lambda: redis_ping(port), proc, self.start_timeout, self.log)
        say(f"redis: started pid {proc.pid} on {HOST}:{port}")
        state["env"] = {
            "ASTROCYTE_TEST_REDIS_URL": f"redis://{HOST}:{port}/0",
            "ASTROCYTE_TEST_REDIS_SERVER_BIN": binary,
        }
        return state
