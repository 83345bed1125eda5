"""Child processes: start them honestly, restart the ones that die, stop them all.

Used by `sipledger up` (broker, proxy, API, CDR, billing, RADIUS) and by the
proxy's own supervisor (its N workers).  Every child keeps one protocol:

* once it serves, it prints ``<NAME> READY ...`` on stdout;
* if it cannot start, it prints a one-line reason on stderr (``error: ...``)
  and exits non-zero.

So starting a child means waiting for its READY line or its exit, whichever
comes first; a child that exits before READY fails the whole start with
``"<name>: <its last stderr line>"`` and is not retried (it would only fail the
same way again, as a restart loop of tracebacks).  Only a child that dies
*after* READY is restarted, with growing backoff (and again if that restart
fails: what ran once may run again when its port or broker is back).
Stopping goes in reverse start order: SIGTERM, then SIGKILL after a grace
period.

Every child also dies with its parent: the kernel sends it SIGKILL when the
process that spawned it dies (``PR_SET_PDEATHSIG``), even on ``kill -9`` of
the parent, so a crashed supervisor never leaves a broker or worker behind.
The signal follows the *thread* that forked the child, so children are
spawned from the main thread only.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .logs import RotatingLog
from .metrics import process_dead

READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0            # READY this long: the next death starts the backoff afresh
_PR_SET_PDEATHSIG = 1            # <linux/prctl.h>

log = logging.getLogger(__name__)


class StartFailed(Exception):
    """A child exited (or stayed silent) before READY; the message is ``"<name>: <reason>"``."""


# -- spawning ------------------------------------------------------------------------------

def _libc_prctl() -> Callable[..., int] | None:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):        # not Linux: no parent-death signal
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _libc_prctl()


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies.

    SIGKILL by default: every service is safe to kill at any point (durable
    outbox, idempotent sinks, at-least-once input), and nothing can catch or
    delay it.  Everything is resolved here, in the parent, so the forked child
    runs only the prctl call and a getppid check."""
    prctl, parent = _PRCTL, os.getpid()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:           # the parent died before prctl: the signal is lost
            os.kill(os.getpid(), sig)
    return preexec


def spawn(argv: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a child that must not outlive this process.

    Only from the main thread: the parent-death signal fires when the thread
    that forked the child ends, so a child spawned from a short-lived thread
    would be killed with it.  From another thread the child is spawned
    without it (logged); the supervisors below refuse instead."""
    preexec = None
    if threading.current_thread() is threading.main_thread():
        preexec = die_with_parent()
    else:
        log.warning("%s spawned outside the main thread: it will not die with this process", argv[0])
    return subprocess.Popen(list(argv), preexec_fn=preexec, **popen_kwargs)


def stop_on_signals(stopping: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stopping`` (the main loop then stops the children)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())


def one_line_errors(main: Callable[[], int | None]) -> int:
    """Run a child's ``main`` keeping the protocol for the unforeseen too: an
    exception is its traceback (for the child's log), then one last line,
    ``error: ...``, which is what the supervisor reports, and status 1."""
    try:
        return main() or 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        traceback.print_exc()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {reason}", file=sys.stderr, flush=True)
        return 1


# -- one child -------------------------------------------------------------------------------

@dataclass
class Child:
    """One row of a supervisor's table: what to run and how it says it is up."""
    name: str
    argv: list[str]
    ready: str                          # stdout line prefix, e.g. "PROXY READY"
    log: Path | None = None             # its stdout/stderr go here (None: our stderr)
    log_max_bytes: int = 10 * 1024 * 1024   # the log is rotated at this size ([logging] max_bytes)
    log_backups: int = 5                # rotated files kept ([logging] backups)
    pass_fds: tuple[int, ...] = ()
    env: dict[str, str] | None = None

    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    ready_line: str = field(default="", init=False)
    last_error: str = field(default="", init=False)    # last line it wrote to stderr
    restarts: int = field(default=0, init=False)
    _is_ready: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _readers: list[threading.Thread] = field(default_factory=list, init=False, repr=False)
    ready_at: float | None = field(default=None, init=False, repr=False)      # monotonic
    restart_at: float | None = field(default=None, init=False, repr=False)    # monotonic, when due
    _log: "RotatingLog | _Stderr | None" = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(f"{self.name}: start children from the main thread "
                               "(the parent-death signal follows the spawning thread)")
        if self._log is None:
            self._log = (_Stderr() if self.log is None
                         else RotatingLog(self.log, self.log_max_bytes, self.log_backups))
        self.ready_line = self.last_error = ""
        self._is_ready.clear()
        self.ready_at = None
        self.proc = spawn(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, pass_fds=self.pass_fds,
                          env=self.env if self.env is not None else os.environ.copy())
        # Both pipes are drained for the child's whole life (a full pipe would
        # block it) and copied to its log; stdout is watched for READY, stderr
        # for its last line (its reason, if it exits).
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, is_stderr: bool) -> None:
        sink = self._log
        assert sink is not None
        for raw in stream:
            with contextlib.suppress(OSError):
                sink.write(raw if raw.endswith(b"\n") else raw + b"\n")
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            if is_stderr:
                self.last_error = line
            elif not self._is_ready.is_set() and line.startswith(self.ready):
                self.ready_line = line
                self.ready_at = time.monotonic()
                self._is_ready.set()
        stream.close()

    @property
    def is_ready(self) -> bool:
        return self._is_ready.is_set()

    def reason(self) -> str:
        """Why it exited: its last stderr line without the "error: " prefix."""
        for reader in self._readers:         # the last lines may still be in the pipe
            reader.join(timeout=2.0)
        reason = self.last_error.removeprefix("error:").strip()
        if reason:
            return reason
        status = self.proc.returncode if self.proc is not None else None
        when = "" if self.is_ready else f" before {self.ready}"
        where = f" (see {self.log})" if self.log is not None else ""
        return f"exited with status {status}{when}{where}"

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)

    def close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=2.0)
        # a reader still running (something else holds the pipe) keeps the log
        # open: closing it would let a reused fd number receive its lines
        if self._log is not None and not any(r.is_alive() for r in self._readers):
            self._log.close()
            self._log = None


class _Stderr:
    """The supervisor's own stderr as a child's log (no rotation: not our file)."""

    def __init__(self) -> None:
        self._fd = os.dup(sys.stderr.fileno())

    def write(self, data: bytes) -> None:
        os.write(self._fd, data)

    def close(self) -> None:
        os.close(self._fd)


# -- a table of children ------------------------------------------------------------------

class Supervisor:
    """Start a table of children, keep them running, stop them in reverse order.

    ``together=True`` spawns all at once and waits for every READY (the
    proxy's workers wait for each other before they are ready); otherwise each
    child is started after the one before it is ready (table order is
    dependency order)."""

    def __init__(self, children: Sequence[Child], *, together: bool = False,
                 ready_timeout: float = READY_TIMEOUT_S, grace: float = STOP_GRACE_S,
                 backoff: Sequence[float] = RESTART_BACKOFF_S,
                 warn: Callable[[str], None] | None = None,
                 stopping: threading.Event | None = None):
        self.children = list(children)
        self.together = together
        self.ready_timeout = ready_timeout
        self.grace = grace
        self.backoff = tuple(backoff)
        self.warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
        self.stopping = stopping if stopping is not None else threading.Event()

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def stop_on_signals(self) -> None:
        """SIGINT/SIGTERM end ``start`` or ``watch``, and so the whole tree."""
        stop_on_signals(self.stopping)

    def start(self) -> None:
        """Every child READY, or ``StartFailed`` naming the first that was not
        (the others are stopped again)."""
        batches = [self.children] if self.together else [[c] for c in self.children]
        try:
            for batch in batches:
                for child in batch:
                    child.start()
                self._wait_ready(batch)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, batch: list[Child]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = list(batch)
        while True:
            for child in list(pending):
                if not child.running:                 # even after READY: it is not serving now
                    raise StartFailed(f"{child.name}: {child.reason()}")
                if child.is_ready:
                    pending.remove(child)
            if not pending:
                return
            if self.stopping.wait(0.05):
                raise StartFailed(f"{pending[0].name}: interrupted before {pending[0].ready}")
            if time.monotonic() > deadline:
                raise StartFailed(f"{pending[0].name}: no {pending[0].ready} line within "
                                  f"{self.ready_timeout:g} s")

    def watch(self, tick: Callable[[], None] = lambda: None, interval: float = 0.25) -> None:
        """Until ``stopping``: restart children that died after READY (with backoff)."""
        while not self.stopping.wait(interval):
            tick()
            for child in self.children:
                if not self.stopping.is_set():
                    self._check(child)

    def _check(self, child: Child) -> None:
        if child.proc is None or child.running:
            return
        now = time.monotonic()
        if child.restart_at is None:
            if child.ready_at is not None and now - child.ready_at >= STABLE_AFTER_S:
                child.restarts = 0
            delay = self.backoff[min(child.restarts, len(self.backoff) - 1)]
            self.warn(f"{child.name} exited with status {child.proc.returncode} "
                      f"({child.reason()}); restarting in {delay:g} s")
            process_dead(child.proc.pid)         # its live gauges no longer count
            child.restart_at = now + delay
        elif now >= child.restart_at:
            child.restart_at = None
            child.restarts += 1
            child.start()

    def stop(self) -> None:
        """SIGTERM in reverse start order, then SIGKILL whatever outlives the
        grace period.  Children started one by one stop one by one (each
        before the ones it was started after); children started together
        stop together."""
        self.stopping.set()
        running = [c for c in reversed(self.children) if c.running]
        batches = [running] if self.together else [[c] for c in running]
        for batch in batches:
            for child in batch:
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + self.grace
            for child in batch:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.signal(signal.SIGKILL)
                    child.wait()
        for child in self.children:
            child.close()
