"""A copy of this checkout to run set-up scripts and README commands in, as a fresh clone would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def copy_checkout(dest: Path) -> Path:
    """The tracked (and new, not ignored) files of this checkout, copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = REPO / os.fsdecode(raw)
        if source.is_file():
            target = dest / os.fsdecode(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (it was started in a session of its own), SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def outside_nox() -> dict[str, str]:
    """This environment without the test session's own venv and tool settings (``VIRTUAL_ENV``,
    ``UV_*``, ``NOX*``, ``PYTHONPATH``), as a reader's or a script's shell would have it."""
    inherited = ("VIRTUAL_ENV", "UV_", "NOX", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
