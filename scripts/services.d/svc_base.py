"""The two kinds of service scripts/services manages: daemons it runs, and tools it only checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from svc_common import (
    ServiceError,
    load_state,
    pid_alive,
    save_state,
    say,
    service_dir,
    spawn,
    terminate,
    wait_until,
)


class Service:
    """A thing the test suites need. Subclasses fill in the hooks; `up` is idempotent."""

    name = ""
    daemon = False

    @property
    def dir(self) -> Path:
        return service_dir(self.name)

    @property
    def log(self) -> Path:
        return self.dir / f"{self.name}.log"

    def missing_debs(self) -> list[str]:
        """Debian packages to install before `up` can work (empty when all are present)."""
        return []

    def up(self) -> dict[str, str]:
        """Make the service usable and return the environment variables that point tests at it."""
        raise NotImplementedError

    def down(self) -> bool:
        """Stop what `up` started; returns True if something was stopped."""
        return False

    def status(self) -> tuple[str, str]:
        """(one-word state, detail) for `scripts/services status`."""
        state = load_state(self.name)
        if state.get("ready"):
            return "ready", f"checked by the last up (log: {self.log})"
        return "unknown", "not set up yet (run `scripts/services up`)"

    def mark_unusable(self) -> None:
        """After a failed `up`: stop exporting the variables of an earlier success."""
        state = load_state(self.name)
        state["ready"] = False
        save_state(self.name, state)

    def exported_env(self) -> dict[str, str]:
        """The variables of the last successful `up`, or nothing when the service is not usable now."""
        state = load_state(self.name)
        return dict(state.get("env", {})) if state.get("ready") else {}


class Daemon(Service):
    """A server process we start detached, tracked by pid in `.services/<name>/state.json`."""

    daemon = True
    start_timeout = 60.0

    def marker(self, state: dict) -> str:
        """A string the server's command line contains, to recognise our own process."""
        raise NotImplementedError

    def probe(self, state: dict) -> bool:
        """True when the server really answers its protocol."""
        raise NotImplementedError

    def start(self, state: dict) -> dict:
        """Start the server, wait until it answers, and return the new state (with pid and env)."""
        raise NotImplementedError

    def launch(self, cmd: list[str], state: dict, env: dict | None = None) -> subprocess.Popen:
        """Spawn the server detached and record its pid at once, so `down` can always find it."""
        proc = spawn(cmd, self.log, env=env, cwd=self.dir)
        state["pid"] = proc.pid
        save_state(self.name, state)
        return proc

    def stop_process(self, state: dict) -> bool:
        return terminate(state.get("pid"), self.marker(state))

    def running(self, state: dict) -> bool:
        return bool(state.get("pid")) and pid_alive(state.get("pid"), self.marker(state))

    def up(self) -> dict[str, str]:
        state = load_state(self.name)
        if self.running(state):
            if wait_until(lambda: self.probe(state), 10.0):
                say(f"{self.name}: already running (pid {state['pid']}), reused")
                state["ready"] = True
                save_state(self.name, state)
                return state["env"]
            say(f"{self.name}: pid {state['pid']} does not answer, restarting it")
            self.stop_process(state)
        state.update(ready=False, pid=None)
        save_state(self.name, state)
        if self.log.exists():
            # One log per start keeps failure excerpts relevant; the previous one stays for comparison.
            self.log.replace(self.log.with_suffix(".log.prev"))
        try:
            state = self.start(state)
        except BaseException:
            # Leave nothing half-started behind: stop whatever `launch` recorded.
            self.stop_process(load_state(self.name))
            raise
        state["ready"] = True
        save_state(self.name, state)
        return state["env"]

    def down(self) -> bool:
        state = load_state(self.name)
        if not state:
            return False
        stopped = self.stop_process(state) if self.running(state) else False
        state.update(ready=False, pid=None)
        save_state(self.name, state)
        return stopped

    def status(self) -> tuple[str, str]:
        state = load_state(self.name)
        if not self.running(state):
            return "stopped", f"log: {self.log}" if self.log.exists() else "never started"
        answers = "answers" if self.probe(state) else "DOES NOT ANSWER"
        return "running", f"pid {state['pid']}, {self.address(state)}, {answers}, log: {self.log}"

    def address(self, state: dict) -> str:
        return f"127.0.0.1:{state.get('port')}"

    def exported_env(self) -> dict[str, str]:
        state = load_state(self.name)
        if not (state.get("ready") and self.running(state)):
            return {}
        return dict(state.get("env", {}))


def require(condition: bool, message: str, log: Path | None = None) -> None:
    if not condition:
        raise ServiceError(message, log)
