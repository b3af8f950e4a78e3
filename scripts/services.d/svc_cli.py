"""Command line of scripts/services: up, down, status, env, reset."""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from svc_base import Service
from svc_common import REPO, STATE_ROOT, ServiceError, apt_install, say, tail
from svc_kafka import Kafka
from svc_postgres import Postgres
from svc_redis import Redis
from svc_tools import Chromium, Mono, Nginx

SERVICES: dict[str, Service] = {
    svc.name: svc for svc in (Redis(), Postgres(), Kafka(), Nginx(), Chromium(), Mono())
}
ENV_FILE = STATE_ROOT / "env"
USAGE = f"""usage: scripts/services up [NAME ...] | down [NAME ...] | status | env | reset
services: {", ".join(SERVICES)} (default: all)"""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@contextmanager
def exclusive(timeout: float = 1800.0) -> Iterator[None]:
    """One up/down at a time per checkout; a second caller waits (bounded) instead of racing."""
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / ".lock", "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SystemExit("services: another scripts/services run holds .services/.lock") from None
                time.sleep(0.5)
        yield


def select(names: list[str]) -> list[Service]:
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        print(f"services: unknown service(s): {', '.join(unknown)}\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    return [SERVICES[name] for name in (names or SERVICES)]


def env_lines() -> list[str]:
    # Tests that must stop and restart a daemon call this script (`down kafka`, then `up kafka`).
    lines = [f"export ASTROCYTE_TEST_SERVICES_SCRIPT={shlex.quote(str(REPO / 'scripts' / 'services'))}"]
    for svc in SERVICES.values():
        for key, value in svc.exported_env().items():
            lines.append(f"export {key}={shlex.quote(value)}")
    return lines


def write_env_file() -> None:
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    lines = env_lines()
    ENV_FILE.write_text("".join(line + "\n" for line in lines))


def install_debs(services: list[Service]) -> dict[str, ServiceError]:
    """One apt-get run for every missing package; services whose install failed are returned."""
    wanted = {svc.name: svc.missing_debs() for svc in services}
    packages = sorted({package for missing in wanted.values() for package in missing})
    if not packages:
        return {}
    try:
        apt_install(packages)
    except ServiceError as exc:
        return {name: exc for name, missing in wanted.items() if missing}
    return {}


def start_all(services: list[Service]) -> dict[str, ServiceError]:
    """Bring services up in parallel (Kafka's JVM start dominates; others overlap it)."""
    failures = install_debs(services)
    todo = [svc for svc in services if svc.name not in failures]

    def bring_up(svc: Service) -> ServiceError | None:
        try:
            svc.up()
        except ServiceError as exc:
            return exc
        except Exception as exc:  # a bug or an OS error must still name the service and its log
            return ServiceError(f"{type(exc).__name__}: {exc}", svc.log)
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        for svc, error in zip(todo, pool.map(bring_up, todo), strict=True):
            if error is not None:
                failures[svc.name] = error
    for name in failures:
        SERVICES[name].mark_unusable()
    return failures


def cmd_up(names: list[str]) -> int:
    started = time.monotonic()
    services = select(names)
    with exclusive():
        failures = start_all(services)
        write_env_file()
    for error in failures.values():
        excerpt = tail(error.log)
        if excerpt:
            print(
                f"services: last lines of {error.log}:\n"
                + "\n".join(f"  | {line}" for line in excerpt.splitlines()),
                file=sys.stderr,
            )
    strict = in_ci()
    for name, error in failures.items():
        where = f" (log: {error.log})" if error.log else ""
        label = "FAILED" if strict else "warning: unavailable,"
        print(f"services: {label} {name}: {error}{where}", file=sys.stderr)
    ready = [svc.name for svc in services if svc.name not in failures]
    say(f"up in {time.monotonic() - started:.1f}s: ready: {', '.join(ready) or 'none'}; env: {ENV_FILE}")
    return 1 if failures and strict else 0


def cmd_down(names: list[str]) -> int:
    services = select(names)
    with exclusive():
        for svc in reversed(services):
            if svc.daemon:
                say(f"{svc.name}: {'stopped' if svc.down() else 'was not running'}")
        write_env_file()
    return 0


def cmd_status() -> int:
    for svc in SERVICES.values():
        state, detail = svc.status()
        print(f"{svc.name:<9} {state:<8} {detail}")
    return 0


def cmd_reset() -> int:
    cmd_down([])
    shutil.rmtree(STATE_ROOT, ignore_errors=True)
    say(f"removed {STATE_ROOT} (caches in .cache/ kept)")
    return 0


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "up":
        return cmd_up(args)
    if command in ("down", "stop"):
        return cmd_down(args)
    if command == "status" and not args:
        return cmd_status()
    if command == "env" and not args:
        print("\n".join(env_lines()))
        return 0
    if command == "reset" and not args:
        return cmd_reset()
    print(USAGE, file=sys.stderr)
    return 0 if command in ("-h", "--help", "help") else 2
