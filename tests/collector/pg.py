"""A throwaway PostgreSQL 15 cluster for tests and benchmarks (Debian postgresql-15; run as root).

    with PgService().start() as pg:
        store = open_store(pg.url)

initdb runs as the postgres user in a directory chowned to it; the server listens on 127.0.0.1 on a free port
with its unix socket in the same directory, and stops by pid (SIGINT: fast shutdown).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

from tests.services import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    return (PG_BIN / "initdb").exists() and os.geteuid() == 0


class PgService:
    def __init__(self) -> None:
        self.directory: Path | None = None
        self.port = 0
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout_s: float = 30, durable: bool = False) -> Self:
        """Start a new cluster; `durable=False` (tests) turns fsync and synchronous commit off."""
        # Its own directory under /tmp: pytest's tmp_path lives under a root-only (0700) parent that the
        # postgres user cannot traverse.
        directory = Path(tempfile.mkdtemp(prefix="cctv-pg-"))
        directory.chmod(0o711)
        user = pwd.getpwnam("postgres")
        shutil.chown(directory, user.pw_uid, user.pw_gid)
        data = directory / "data"
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.port = free_port()
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-w",
            "-t",
            str(int(timeout_s)),
            "-l",
            str(directory / "server.log"),
            "-o",
            f"-p {self.port} -k {directory} -c listen_addresses=127.0.0.1"
            + ("" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"),
        )
        self.directory = directory
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        self._wait_ready(timeout_s)
        return self

    def _as_postgres(self, *argv: str) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed (exit {done.returncode}): {done.stdout}{done.stderr}")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def new_database(self, name: str) -> str:
        """Create an empty database and return its URL (one per test keeps tests independent)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 30
        while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
            stat = Path(f"/proc/{self.pid}/stat").read_text(errors="replace")
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.02)
        self.pid = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
