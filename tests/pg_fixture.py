"""A throwaway PostgreSQL server for the scale-out tests (session-scoped fixture ``postgres_url``).

The cluster is created with ``initdb`` from the newest ``/usr/lib/postgresql/*/bin`` (or ``pg_config
--bindir``, or ``$PG_BIN``), listens on a free port of 127.0.0.1 with its socket in a temporary folder,
and is stopped and deleted at the end of the session. ``initdb`` refuses to run as root, so under root
the server runs as the ``postgres`` system user (or ``nobody``) through ``runuser``/``su``, with its data
in a temporary folder that user owns. If the server cannot be started the tests fail: they never skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DB_NAME = "optimizer_test"


def _bin_dir() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent  # type: ignore[arg-type]
    pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found; run tests/run.sh, which installs them")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """The unprivileged user that runs the server when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.fail("running as root and neither the 'postgres' nor the 'nobody' user exists to run initdb")


def _traversable_tmp() -> str:
    """A temporary folder whose parents another user can enter (the server user must reach its data)."""
    base = Path(tempfile.gettempdir()).resolve()
    if all(os.stat(p).st_mode & 0o001 for p in [base, *base.parents]):
        return str(base)
    return "/tmp"


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    import shlex

    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(argv)]


class PostgresServer:
    """One throwaway cluster: ``start()``, ``url``, ``stop()``."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.user = _server_user()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="optimizer-pg-", dir=_traversable_tmp() if self.user else None))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.started = False

    @property
    def url(self) -> str:
        # Exactly as the docs write it: SQLAlchemy picks the driver (psycopg 3, the postgres extra).
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(_as_user(self.user, argv), capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        if self.user is not None:
            info = pwd.getpwnam(self.user)
            os.chown(self.root, info.pw_uid, info.pw_gid)
        os.chmod(self.root, 0o700)
        init = self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}): {init.stderr.strip() or init.stdout.strip()}")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=100"
        start = self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if start.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            pytest.fail(f"pg_ctl start failed ({start.returncode}): {start.stderr.strip()}\n{log[-2000:]}")
        self.started = True
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL on port {self.port} does not accept connections: {exc}")
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB_NAME}")
        conn.close()

    def stop(self) -> None:
        if self.started:
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=60)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a database on a throwaway PostgreSQL server (started once per session, removed after)."""
    server = PostgresServer()
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
