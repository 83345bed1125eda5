"""Apply ``schema.sql`` to a back end, idempotently.

The statements before the first ``-- migration N: description`` header (the
``schema_migrations`` bookkeeping table) run every time; each migration block
runs once, in version order, and is then recorded with a checksum of its
statements.  Running ``migrate`` again applies nothing.  A recorded migration
whose text changed since, or a database at a version this program does not
know, is an error: the schema is never silently diverged.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .. import clock
from .backend import Backend

SCHEMA_FILE = Path(__file__).with_name("schema.sql")
_HEADER = re.compile(r"^--\s*migration\s+(\d+)\s*:\s*(.*?)\s*$", re.MULTILINE)


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        return hashlib.sha256("\n;\n".join(self.statements).encode()).hexdigest()


def split_statements(text: str) -> tuple[str, ...]:
    """Statements of a block: comment lines dropped, split at ';' ending a line."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        raise MigrationError(f"statement without a closing ';': {rest[:60]!r}")
    return tuple(statements)


def parse(text: str) -> tuple[tuple[str, ...], list[Migration]]:
    """(always-run preamble statements, migrations in version order)."""
    headers = list(_HEADER.finditer(text))
    preamble = split_statements(text[:headers[0].start()] if headers else text)
    migrations = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        migrations.append(Migration(int(header[1]), header[2],
                                    split_statements(text[header.end():end])))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must be 1, 2, 3, ... in order; found {versions}")
    return preamble, migrations


def load() -> tuple[tuple[str, ...], list[Migration]]:
    return parse(SCHEMA_FILE.read_text())


def applied(backend: Backend) -> dict[int, str]:
    """Recorded migrations: version -> checksum."""
    rows = backend.query("SELECT version, argMax(checksum, applied_ms) FROM schema_migrations "
                         "GROUP BY version")
    return {int(version): checksum for version, checksum in rows}


def migrate(backend: Backend, text: str | None = None) -> list[int]:
    """Bring ``backend`` up to the newest version; returns the versions applied now."""
    preamble, migrations = parse(text) if text is not None else load()
    for statement in preamble:
        backend.execute(statement)
    done = applied(backend)
    known = {m.version: m for m in migrations}
    newer = sorted(set(done) - set(known))
    if newer:
        raise MigrationError(f"the database has schema version {newer[-1]}, newer than this "
                             f"program knows ({max(known, default=0)}): upgrade sipledger")
    now_applied = []
    for migration in migrations:
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                raise MigrationError(f"migration {migration.version} ({migration.description}) "
                                     "changed since it was applied: add a new migration instead")
            continue
        for statement in migration.statements:
            backend.execute(statement)
        backend.insert("schema_migrations", {
            "version": [migration.version], "description": [migration.description],
            "checksum": [migration.checksum], "applied_ms": [clock.now_ms()]})
        now_applied.append(migration.version)
    return now_applied


def current_version(backend: Backend) -> int:
    return max(applied(backend), default=0)
