"""A private PostgreSQL (Debian ``postgresql``) on loopback for tests.

``PostgresServer()`` makes a cluster of its own (``initdb``) in a temporary
directory, starts ``postgres`` in the foreground on 127.0.0.1:<free port>
with its socket in that directory, and creates databases on demand; ``stop()``
ends it by PID (SIGTERM = "smart" shutdown, then SIGKILL) and removes the
directory.  PostgreSQL refuses to run as root, so when the tests run as root
the server runs as the ``postgres`` system user (the Debian package makes it)
and its directory belongs to that user.

``url(db)`` is the SQLAlchemy URL the product is configured with
(``postgresql+psycopg://``, the psycopg 3 driver), trust authentication on
loopback only: nothing listens elsewhere.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.poll import eventually
from tests.harness.procs import terminate
from tests.harness.proxy import free_tcp_port

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "sipledger"               # the database role the product connects as


def postgres_bin(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def postgres_available() -> bool:
    return Path(postgres_bin("postgres")).exists() and Path(postgres_bin("initdb")).exists()


class PostgresServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_tcp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sipledger-pg-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, *cmd], cwd=self.dir, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, check=True)

    def start(self) -> "PostgresServer":
        try:
            self._run(postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--no-sync")
            log = open(self.dir / "postgres.log", "wb")
            # fsync off: a test cluster needs no durability, and the suite its speed
            self.proc = subprocess.Popen(
                [*self._as, postgres_bin("postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                 "-k", str(self.dir), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            eventually(self._accepts, "PostgreSQL to accept connections", timeout=30, interval=0.1)
            self.psql(f"CREATE ROLE {USER} LOGIN SUPERUSER")
        except BaseException:
            self.stop()
            raise
        return self

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("postgres exited:\n" + self.log()[-3000:])
        res = subprocess.run([postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True, timeout=5)
        return res.returncode == 0

    def psql(self, sql: str, db: str = "postgres") -> str:
        res = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                              "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {res.stderr.strip()}")
        return res.stdout

    def create_database(self, name: str) -> str:
        """A new, empty database owned by the product's role; its SQLAlchemy URL."""
        self.psql(f'CREATE DATABASE "{name}" OWNER {USER}')
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{db}"

    def log(self) -> str:
        path = self.dir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, grace=10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
