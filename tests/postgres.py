"""A real, throw-away PostgreSQL server for tests, from the machine's PostgreSQL binaries.

``initdb`` refuses to run as root: as root, the cluster belongs to the ``postgres`` user
and every server command runs through ``runuser -u postgres``. The cluster lives in a
temporary folder, listens on a free loopback port (its Unix socket in that folder), and
asks for a password over TCP (scram-sha-256). Without PostgreSQL binaries the caller's
tests fail, saying how to install them (``make test`` does, as root): a skipped test
proves nothing.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Postgres:
    folder: Path
    bin_dir: Path
    port: int
    password: str
    user: str = "postgres"
    host: str = "127.0.0.1"

    def uri(self, database: str, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URI."""
        _run([str(self.bin_dir / "createdb"), "-h", str(self.folder), "-p", str(self.port),
              "-U", self.user, name])  # fmt: skip
        return self.uri(name)

    def query(self, database: str, sql: str) -> list[tuple[object, ...]]:
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()


def bin_dir() -> Path | None:
    """The newest PostgreSQL ``bin/`` folder with ``initdb`` (Debian's layout), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable(reason: str) -> None:
    """Fail the calling test, naming the reason and the fix."""
    pytest.fail(
        f"PostgreSQL cannot be started here: {reason}; install it (apt-get install "
        "postgresql; `make test` does so when run as root)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner() -> list[str]:
    """The prefix that runs a server command as the cluster's owner."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _run(cmd: list[str]) -> None:
    result = subprocess.run([*_as_owner(), *cmd], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stderr}")


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the duration of the block (skips/fails when impossible)."""
    binaries = bin_dir()
    if binaries is None:
        unavailable("no initdb found (install Debian's postgresql package)")
        raise AssertionError("unreachable")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to own the cluster")
            raise AssertionError("unreachable") from None
    folder = Path(tempfile.mkdtemp(prefix="nbmlops-pg-"))  # not under pytest's 0700 root
    if os.geteuid() == 0:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    password = secrets.token_hex(8)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    pg = Postgres(folder=folder, bin_dir=binaries, port=free_port(), password=password)
    data = folder / "data"
    started = False
    try:
        try:
            _run([str(binaries / "initdb"), "-D", str(data), "-U", pg.user,
                  f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                  "--no-locale", "-E", "UTF8", "--no-sync"])  # fmt: skip
            options = f"-p {pg.port} -k {folder} -c listen_addresses={pg.host} -c fsync=off"
            _run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"),
                  "-w", "-t", "60", "-o", options, "start"])  # fmt: skip
            started = True
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            unavailable(str(exc))
        yield pg
    finally:
        if started:
            subprocess.run(
                [*_as_owner(), str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate",
                 "-w", "stop"],
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
