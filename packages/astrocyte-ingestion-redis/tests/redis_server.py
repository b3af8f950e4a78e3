"""Test-only: a private redis-server the tests may stop, SIGKILL and restart at will.

It listens on 127.0.0.1 on a free port that it keeps across restarts, and persists with AOF and
``appendfsync always`` so every acknowledged write survives a stop or a kill.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

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
