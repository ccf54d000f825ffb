"""Shared pytest fixtures: a throwaway PostgreSQL server for storage tests.

The server is Debian's ``postgresql`` package (``scripts/bootstrap.sh test`` installs it): one
``initdb`` per test session in a temporary folder, started with ``pg_ctl`` on a free loopback port
(as the ``postgres`` system user when the tests run as root, since PostgreSQL refuses to run as
root), trust authentication on 127.0.0.1 only, and stopped and removed at the end of the session.
Each test that asks for :func:`postgres_url` gets a fresh, empty database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        for _ in range(3):  # a just-closed pooled connection can linger for a moment
            try:
                self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            except subprocess.CalledProcessError:
                time.sleep(0.2)

    def psql(self, sql: str) -> None:
        subprocess.run(
            [str(self.bin_dir / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )


def _postgres_bin_dir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        pytest.fail(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install Debian's "
            "`postgresql` package (scripts/bootstrap.sh test does)."
        )
    return candidates[-1].parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the whole test session."""
    bin_dir = _postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="medstudy-pg-"))
    data, log = root / "data", root / "server.log"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda cmd: subprocess.run(as_user + cmd, check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        run([str(bin_dir / "initdb"), "-D", str(data), "-U", "medstudy", "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"])
        # fsync off: a throwaway server; the crash-safety tests exercise SQLite, whose settings we ship.
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"])
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text(errors="replace") if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.cmd}\n{exc.stdout}\n{exc.stderr}\n{server_log}")
    server = PostgresServer(bin_dir=bin_dir, host="127.0.0.1", port=port, user="medstudy")
    try:
        yield server
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server (dropped afterwards)."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)
