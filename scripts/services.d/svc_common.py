"""Shared plumbing for scripts/services: paths, state files, ports, processes, apt and probes.

Stdlib only: this runs before any project venv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE_ROOT = REPO / ".services"
CACHE_ROOT = REPO / ".cache"
HOST = "127.0.0.1"

_print_lock = threading.Lock()


class ServiceError(Exception):
    """A service could not be installed or started; `log` names the file that explains why."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def say(message: str) -> None:
    """Print a progress line to stderr (stdout is reserved for `env`)."""
    with _print_lock:
        print(f"services: {message}", file=sys.stderr, flush=True)


def service_dir(name: str) -> Path:
    path = STATE_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_state(name: str) -> dict:
    path = STATE_ROOT / name / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_state(name: str, state: dict) -> None:
    path = service_dir(name) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


# --- ports -------------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    # SO_REUSEADDR matches what the servers do, so a port in TIME_WAIT counts as free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(previous: int | None, taken: Collection[int] = ()) -> int:
    """Reuse the previous port when it is free (stable addresses across restarts), else a new one."""
    if previous and previous not in taken and port_is_free(previous):
        return previous
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise ServiceError("no free TCP port found on 127.0.0.1")


def tcp_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- processes ---------------------------------------------------------------------------------


def pid_alive(pid: int | None, marker: str) -> bool:
    """True when `pid` runs (not a zombie) and its command line contains `marker`.

    The marker guards against a recycled pid: we never signal a process we did not start.
    """
    if not pid:
        return False
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker in cmdline


def spawn(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start a long-running server detached from our session, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )


def terminate(pid: int | None, marker: str, timeout: float = 30.0) -> bool:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Returns True if a process was stopped."""
    if not pid_alive(pid, marker):
        return False
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) server would otherwise never see the TERM
    except ProcessLookupError:
        return False
    if wait_until(lambda: not pid_alive(pid, marker), timeout):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    wait_until(lambda: not pid_alive(pid, marker), 10.0)
    return True


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_ready(probe: Callable[[], bool], proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Wait until `probe()` succeeds; fail fast if the process exits, fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"exited with code {proc.returncode} while starting", log)
        if probe():
            return
        time.sleep(0.25)
    raise ServiceError(f"did not answer within {timeout:.0f}s", log)


def run(cmd: list[str], log: Path, timeout: float, **kwargs) -> None:
    """Run a command to completion, output appended to `log`; raise ServiceError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=True,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"`{Path(cmd[0]).name}` timed out after {timeout:.0f}s", log) from exc
        except subprocess.CalledProcessError as exc:
            raise ServiceError(f"`{Path(cmd[0]).name}` failed with code {exc.returncode}", log) from exc
        except OSError as exc:
            raise ServiceError(f"cannot run `{cmd[0]}`: {exc}", log) from exc


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- apt ---------------------------------------------------------------------------------------


def deb_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def apt_install(packages: list[str]) -> None:
    """apt-get update + install, waiting for a dpkg lock held by someone else instead of failing."""
    log = STATE_ROOT / "apt.log"
    if os.geteuid() != 0:
        raise ServiceError(f"must be root to apt-get install {' '.join(packages)}", log)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    say(f"apt-get install {' '.join(packages)} (log: {log})")
    for attempt in range(3):
        try:
            run(["apt-get", *lock, "update"], log, timeout=600, env=env)
            break
        except ServiceError as exc:
            # The lists lock may be busy, or a mirror flaky; the install below still may succeed
            # from the lists we have, and says so clearly if it cannot.
            say(f"apt-get update failed ({exc}), attempt {attempt + 1} of 3")
            time.sleep(10 * (attempt + 1))
    run(["apt-get", *lock, "install", "-y", "--no-install-recommends", *packages], log, timeout=1200, env=env)
