"""The set-up scripts repair a set-up interrupted at any step on their next run, on their own.

Each test works in a copy of this checkout in a temporary folder (the repository's own `.venv` and
`.cache/tools` are never touched), kills the script's whole process group with SIGKILL at a step
of its first run, then runs it again and checks that it ends up working. `scripts/run-gateway` is
run without uv on PATH (the plain-pip path a new user has, downloads from PyPI through pip's
cache), `scripts/test` with `scripts/services` replaced by a stub so only its tool venv is built.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from checkout import REPO, copy_checkout, outside_nox, stop

READY = ".astrocyte-setup-complete"


def env_without_uv(tmp: Path) -> dict[str, str]:
    """The environment with every PATH entry holding a `uv` left out, so the scripts use pip."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "uv").exists()]
    env = outside_nox()
    env.update(PATH=os.pathsep.join(path), HOME=os.environ.get("HOME", str(tmp)), PYTHONDONTWRITEBYTECODE="1")
    return env


def start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def kill_when(process: subprocess.Popen[bytes], condition: Callable[[], bool], timeout: float) -> None:
    """SIGKILL the process group as soon as ``condition`` holds; fail when it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the set-up ended before the step it should be killed at"
        assert time.monotonic() < deadline, "the set-up never reached the step to kill it at"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def site_packages(venv: Path) -> list[Path]:
    return list(venv.glob("lib/python3*/site-packages"))


def installing(venv: Path, *names: str) -> Callable[[], bool]:
    """True once one of ``names`` has files in the venv and the set-up is not yet complete."""

    def check() -> bool:
        return not (venv / READY).exists() and any(
            (sp / name).exists() for sp in site_packages(venv) for name in names
        )

    return check


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_live(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no /live answer on port {port} within {timeout} s")


@pytest.mark.timeout(900)
def test_run_gateway_repairs_a_set_up_killed_at_each_step(tmp_path: Path) -> None:
    repo = copy_checkout(tmp_path / "repo")
    env = env_without_uv(tmp_path)
    env["ASTROCYTE_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "run-gateway.log"
    venv = repo / ".venv"
    port = free_port()
    command = [str(repo / "scripts" / "run-gateway"), "--port", str(port)]

    # 1. killed while the venv itself is being created
    kill_when(start(command, repo, env, log), lambda: (venv / "bin" / "python").exists(), 120)
    # 2. killed in the middle of installing the dependencies
    kill_when(start(command, repo, env, log), installing(venv, "pydantic", "fastapi", "numpy"), 600)
    # 3. killed while the first install is being deleted again
    assert not (venv / READY).exists()
    kill_when(start(command, repo, env, log), lambda: "rebuilding" in log.read_text(), 120)
    # 4. the next run repairs it, says what it does, and serves
    gateway = start(command, repo, env, log)
    try:
        wait_for_live(port, gateway, 600)
    finally:
        stop(gateway)
    text = log.read_text()
    # (the third kill may land after the old venv is gone: then the fourth run starts afresh)
    assert text.count("is incomplete or out of date") >= 2, text
    assert "first run: creating" in text and "ready after" in text, text
    assert (venv / READY).exists()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], check=True, timeout=60)

    # A ready venv is reused as it is: no second set-up.
    before = log.stat().st_size
    gateway = start(command, repo, env, log)
    try:
        wait_for_live(port, gateway, 120)
    finally:
        stop(gateway)
    assert "first run" not in log.read_text()[before:]


@pytest.mark.timeout(600)
def test_scripts_test_repairs_its_tool_venv_killed_mid_install(tmp_path: Path) -> None:
    repo = copy_checkout(tmp_path / "repo")
    stub = repo / "scripts" / "services"
    stub.write_text("#!/bin/sh\n# stub: this test builds only the tool venv\nexit 0\n")
    env = env_without_uv(tmp_path)
    log = tmp_path / "test.log"
    tools = repo / ".cache" / "tools"
    command = [str(repo / "scripts" / "test"), "--list"]

    kill_when(start(command, repo, env, log), installing(tools, "nox", "uv", "virtualenv", "colorlog"), 300)
    assert not (tools / READY).exists()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is incomplete or out of date" in result.stderr
    assert "lint" in result.stdout  # nox listed the sessions
    assert (tools / "bin" / "nox").exists() and (tools / "bin" / "uv").exists()


@pytest.mark.timeout(900)
def test_scripts_bench_runs_every_benchmark(tmp_path: Path) -> None:
    # Each benchmark starts in the venv scripts/bench builds (its --help imports everything the
    # benchmark imports), so a README's `scripts/bench NAME` never ends in ModuleNotFoundError.
    # (Built with this checkout's uv when it has one: the pip path is the run-gateway test's.)
    repo = copy_checkout(tmp_path / "repo")
    env = outside_nox()
    tools = REPO / ".cache" / "tools" / "bin"
    if (tools / "uv").exists():
        env["PATH"] = os.pathsep.join([str(tools), env.get("PATH", "")])
    for benchmark in sorted((repo / "benchmarks").glob("*.py")):
        result = subprocess.run(
            [str(repo / "scripts" / "bench"), benchmark.stem, "--help"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, f"{benchmark.name}: {result.stderr[-2000:]}"
        assert "usage:" in result.stdout, benchmark.name
