"""Each worker's live calls, published as a small file for the API and the CLI.

``DATA_DIR/run/calls-worker-<i>.json`` is one JSON object

    {"worker": 0, "pid": 4242, "written_ms": ..., "total": 3, "truncated": false,
     "calls": [{"call_id": ..., "state": "confirmed", ...}, ...]}   # proxy/core/livecalls.py

rewritten by the housekeeping tick (every ``provisioning.reload_seconds``,
1 s by default) when the list changed, and removed when the worker stops.

Why a file and not a request to the workers: the list is read by people and
dashboards, where a second of age is fine; a file costs the worker nothing
while nobody reads it and nothing on the signalling path (one walk of the
call tables and one write per second, skipped when nothing changed, and no
write at all on an idle worker); the API reads N small files without a
connection to each worker or a new socket protocol.  Durations are computed
by the reader from ``answered_ms``, so the file does not change every second
of a long call.  At most ``MAX_CALLS`` rows per worker (``total`` counts
them all).  Measured with 5000 answered calls on one worker: building the
rows 9 ms, a changed file (1.2 MB, ~245 bytes a call) 24 ms, an unchanged
tick 9 ms; the API's merged list 14 ms.  A file whose ``pid`` is not running
is a dead worker's, ignored.

**Several instances** (docs/scale-out.md, "Live calls across instances"): when
``[provisioning] url`` is a server database (PostgreSQL: the one database every
proxy instance and the API already share), each worker also writes the same
state into its row of the table ``live_calls`` there (key: the instance's
address and the worker), and the API lists the calls of every instance from
that table instead of the local files.  Written when the list changed, and its
time alone every ``HEARTBEAT_MS`` (an idle worker's row stays fresh), in a thread of
its own: the signalling loop never waits on the database (one write in flight
at most; a tick that finds one running leaves the change to the next).  A row
not refreshed for ``STALE_MS`` is an instance that died (or lost the
database): ignored, like a dead pid's file.  Rows are stamped with the
writer's clock, so the hosts' clocks must agree within a few seconds (NTP).
Hanging up needs nothing more: every worker of every instance reads
``call.control`` and only the holder of the call acts (proxy/events/control.py).
"""
from __future__ import annotations

import json
import logging
import os
import socket
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, create_engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from ..core.livecalls import live_calls
from ..infra import clock
from ..infra.runfiles import PublishedFile, pid_alive
from ..infra.sqldb import reason

if TYPE_CHECKING:  # pragma: no cover
    from ..core.engine import Core
    from ..infra.config import Config

__all__ = ["LiveCallsFile", "SharedLiveCalls", "SharedLiveCallsReader", "read_live_calls",
           "shared_live_calls_url", "MAX_CALLS", "LiveCallsUnavailable"]

log = logging.getLogger("sipledger.livecalls")

MAX_CALLS = 5000
PREFIX, SUFFIX = "calls-worker-", ".json"
HEARTBEAT_MS = 5_000          # a row is rewritten at least this often, changed or not
STALE_MS = 15_000             # ... and ignored when older: its instance is gone
TIMEOUT_S = 3                 # connect and statement timeout of the shared table's writes and reads

_metadata = MetaData()
live_calls_table = Table(
    "live_calls", _metadata,
    Column("instance", String(255), primary_key=True),   # host:port other instances reach it at
    Column("worker", Integer, primary_key=True),
    Column("node", String(255), nullable=False),         # [node] name
    Column("written_ms", BigInteger, nullable=False),
    Column("state", Text, nullable=False),                # the file's JSON object
)


class LiveCallsUnavailable(RuntimeError):
    """The shared table cannot be read (the database is down or refuses us)."""


def shared_live_calls_url(config: "Config") -> str | None:
    """The database the live calls are shared in: ``[provisioning] url`` when it is a
    server database (several instances share it); None for SQLite, one host."""
    url = config.provisioning.url
    if not url:
        return None
    try:
        return None if make_url(url).get_backend_name() == "sqlite" else url
    except Exception:                # the config check refuses it elsewhere
        return None


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        ms = TIMEOUT_S * 1000
        args = {"connect_timeout": TIMEOUT_S, "options": f"-c statement_timeout={ms} -c lock_timeout={ms}"}
    return create_engine(parsed, pool_size=1, max_overflow=0, pool_pre_ping=True, connect_args=args)


def _ensure_table(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":     # instances starting together: one CREATE (proxy/infra/sqldb.py)
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('sipledger.schema', 0))"))
    _metadata.create_all(conn, checkfirst=True)


def instance_name(config: "Config") -> str:
    """Where the other instances reach this one (its Record-Route host and SIP port);
    the machine's name for a wildcard address (two hosts must not share a row)."""
    host = config.proxy.advertised_host or config.proxy.listen
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"{host}:{config.proxy.sip_port}"


class SharedLiveCalls:
    """One worker's row of ``live_calls``, written off the event loop."""

    def __init__(self, url: str, instance: str, node: str, index: int) -> None:
        self.instance, self.node, self.index = instance[:255], node[:255], index
        self._engine = _engine(url)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-calls")
        self._inflight: Future | None = None
        self._created = False
        self._sent: object = None             # the state of the last successful write
        self._sent_ms = 0
        self.failures = 0

    def publish(self, state: dict[str, Any], key: object, now_ms: int) -> bool:
        """Write ``state`` when ``key`` changed or the heartbeat is due; False when
        nothing was started (unchanged, or the previous write still running)."""
        if self._inflight is not None and not self._inflight.done():
            return False
        if key == self._sent and now_ms - self._sent_ms < HEARTBEAT_MS:
            return False
        self._inflight = self._pool.submit(self._write, state, key, now_ms)
        return True

    def _write(self, state: dict[str, Any], key: object, now_ms: int) -> None:
        t = live_calls_table
        mine = (t.c.instance == self.instance) & (t.c.worker == self.index)
        try:
            with self._engine.begin() as conn:
                if not self._created:
                    _ensure_table(conn)
                # unchanged: only the heartbeat (a row of 5000 calls is 1.6 MB; its time is 8 bytes)
                if key != self._sent or not conn.execute(update(t).where(mine).values(written_ms=now_ms)).rowcount:
                    conn.execute(delete(t).where(mine))
                    conn.execute(insert(t).values(instance=self.instance, worker=self.index, node=self.node,
                                                  written_ms=now_ms, state=json.dumps(state)))
        except SQLAlchemyError as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 60 == 0:      # once a minute while it lasts
                log.warning("live calls not shared (%d failures): %s", self.failures, reason(exc))
            return
        self._created, self._sent, self._sent_ms, self.failures = True, key, now_ms, 0

    def remove(self) -> None:
        """At stop: the row goes (the API stops listing our calls at once)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        t = live_calls_table
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(t).where((t.c.instance == self.instance) & (t.c.worker == self.index)))
        except SQLAlchemyError as exc:
            log.warning("live calls row not removed: %s", reason(exc))
        self._engine.dispose()


class SharedLiveCallsReader:
    """Every instance's fresh worker states from ``live_calls`` (the API keeps one)."""

    def __init__(self, url: str) -> None:
        self._engine = _engine(url)
        self._created = False

    def read(self, now_ms: int) -> list[dict[str, Any]]:
        """By instance and worker, each with its ``instance`` and ``node``;
        LiveCallsUnavailable when the database does not answer."""
        t = live_calls_table
        try:
            if not self._created:          # no proxy wrote yet: an empty table, not an error
                with self._engine.begin() as conn:
                    _ensure_table(conn)
                self._created = True
            with self._engine.connect() as conn:
                rows = conn.execute(select(t.c.instance, t.c.node, t.c.state)
                                    .where(t.c.written_ms >= now_ms - STALE_MS)
                                    .order_by(t.c.instance, t.c.worker)).all()
        except SQLAlchemyError as exc:
            raise LiveCallsUnavailable(f"the shared live-call table: {reason(exc)}") from None
        states = []
        for row in rows:
            try:
                state = json.loads(row.state)
            except ValueError:
                continue
            if isinstance(state, dict):
                states.append({**state, "instance": row.instance, "node": row.node})
        return states

    def close(self) -> None:
        self._engine.dispose()


def calls_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"{PREFIX}{index}{SUFFIX}"


class LiveCallsFile(PublishedFile):
    """One worker's file; ``publish_calls`` writes only when the list changed.  With
    ``config`` naming a shared database, the worker's row there too."""

    def __init__(self, run_dir: Path, index: int, config: "Config | None" = None, limit: int = MAX_CALLS) -> None:
        super().__init__(calls_path(run_dir, index))
        self.index = index
        self.limit = limit
        url = shared_live_calls_url(config) if config is not None else None
        self.shared = (SharedLiveCalls(url, instance_name(config), config.node.name, index)
                       if url is not None and config is not None else None)

    def publish_calls(self, core: "Core") -> bool:
        rows, total = live_calls(core, self.index, self.limit)
        now = clock.now_ms()
        state = {"worker": self.index, "pid": os.getpid(), "written_ms": now,
                 "total": total, "truncated": total > len(rows), "calls": rows}
        if self.shared is not None:
            self.shared.publish(state, (rows, total), now)
        return self.publish(state, unchanged_if=(rows, total))

    def remove(self) -> None:
        super().remove()
        if self.shared is not None:
            self.shared.remove()


def read_live_calls(run_dir: Path) -> list[dict[str, Any]]:
    """The published state of every running worker, by worker index; files of
    workers that are gone (their pid does not run) and unreadable ones are skipped."""
    states = []
    for path in Path(run_dir).glob(f"{PREFIX}*{SUFFIX}"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):          # being replaced right now: the next read has it
            continue
        if isinstance(state, dict) and pid_alive(state.get("pid")):
            states.append(state)
    return sorted(states, key=lambda s: s.get("worker", 0))
