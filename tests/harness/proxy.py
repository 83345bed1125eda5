"""Run `sipledger` (provisioning CLI + `up`) from tests, and read `sip.events`.

``SipledgerProcess`` provisions a data dir and starts ``sipledger up`` in the
background, waits (bounded) for its ``READY sip=H:P kafka=H:K ...`` line and
stops it by PID: SIGINT, wait, SIGKILL — and then any of its descendants that
outlived it (recorded by PID while it ran), so a crashed supervisor cannot
leave a broker or proxy worker behind.

The data dir and config file are passed through SIPLEDGER_DATA_DIR /
SIPLEDGER_CONFIG (honoured by every `sipledger` command) so the harness does
not depend on where the CLI puts its --data-dir/--config options.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from tests.harness.poll import eventually
from tests.harness.procs import terminate
from tests.harness.sipp import free_udp_port

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_RE = re.compile(r"^READY\s+sip=(?P<sip>\S+)(?:.*?\bkafka=(?P<kafka>\S+))?")

# Tansu-friendly consumer settings (docs: /work/shared/notes/platform-facts.md)
TANSU_CONSUMER = dict(session_timeout_ms=6000, heartbeat_interval_ms=1000, fetch_max_wait_ms=20)


@contextlib.contextmanager
def proxy_run(data_dir: str | os.PathLike, config: str | os.PathLike, sip_port: int, bootstrap: str,
              *extra: str, python: str | os.PathLike = sys.executable, cwd: str | os.PathLike | None = None,
              env: Mapping[str, str] | None = None, ready: str = "PROXY READY") -> Iterator[subprocess.Popen]:
    """`python -m proxy run` alone (no `up`): started, its ``PROXY READY`` line
    awaited (else the test fails with its stderr; ``ready``: what the line must
    start with, e.g. "PROXY READY workers=4"), stopped by SIGTERM, killed if it
    does not stop.  ``python``, ``cwd``, ``env``: another interpreter (an
    installed package), where and with what it runs."""
    proc = subprocess.Popen(
        [str(python), "-m", "proxy", "run", "--data-dir", str(data_dir), "--config", str(config),
         "--sip-port", str(sip_port), "--bootstrap", bootstrap, *extra],
        cwd=cwd, env=None if env is None else dict(env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith(ready), proc.stderr.read() if proc.poll() is not None and proc.stderr else line
        yield proc
    finally:
        terminate(proc, grace=30)


class SipledgerError(RuntimeError):
    pass


def cli_command() -> list[str]:
    """How to run the `sipledger` CLI: SIPLEDGER_CLI (word-split) overrides
    ``python -m api.cli`` with this interpreter."""
    override = os.environ.get("SIPLEDGER_CLI")
    if override:
        return override.split()
    return [sys.executable, "-m", "api.cli"]


def free_tcp_port() -> int:
    """A port for a server a test starts (the API): the same rule as SIP ports
    (tests/harness/sipp.py ``TEST_PORTS``)."""
    return free_udp_port()


def _descendants(pid: int) -> list[int]:
    """All descendant PIDs of ``pid`` (children first-level first), via /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for k in kids:
                if k not in out:
                    out.append(k)
                    todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def _start_time(pid: int) -> str | None:
    """Process start time (jiffies): guards against a recycled PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class SipledgerProcess:
    """``sipledger up`` on 127.0.0.1:``sip_port`` with its own data dir.

        sl = SipledgerProcess(tmp_path / "data", port, config_text="[proxy]\\nworkers = 1\\n")
        sl.domain_add("example.test")
        sl.user_add("bob@example.test", "s3cret")
        sl.start()                       # waits for READY
        sl.sip_addr, sl.kafka_bootstrap
        sl.stop()
    """

    def __init__(self, data_dir: str | os.PathLike, sip_port: int, config_text: str | None = None,
                 extra_env: Mapping[str, str] | None = None, *, cli: Sequence[str] | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = int(sip_port)
        self.api_port = free_tcp_port()
        self.cli = list(cli) if cli else cli_command()
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = self.data_dir / "sipledger.toml"
            self.config_path.write_text(config_text)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))
        self.env["SIPLEDGER_DATA_DIR"] = str(self.data_dir)
        if self.config_path is not None:
            self.env["SIPLEDGER_CONFIG"] = str(self.config_path)
        else:
            self.env.pop("SIPLEDGER_CONFIG", None)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.stdout_lines: list[str] = []
        self.ready_line: str | None = None
        self.sip_addr: tuple[str, int] | None = None
        self.kafka_bootstrap: str | None = None
        self.api_url: str | None = None
        self.client: httpx.Client | None = None     # admin REST client (``admin_client``)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._stderr_path = self.data_dir / "up.stderr.log"
        self._stderr = None
        self._known: dict[int, str | None] = {}     # descendant pid -> start time

    # -- provisioning (changes apply live) --------------------------------------
    def run_cli(self, *args: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        cmd = self.cli + [str(a) for a in args]
        try:
            res = subprocess.run(cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise SipledgerError(f"`{' '.join(cmd)}` did not finish within {timeout}s") from exc
        if check and res.returncode != 0:
            raise SipledgerError(f"`{' '.join(cmd)}` exited {res.returncode}\n"
                                 f"stdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-4000:]}")
        return res

    def domain_add(self, domain: str) -> None:
        self.run_cli("domain", "add", domain)

    def user_add(self, address: str, password: str) -> None:
        self.run_cli("user", "add", address, "--password", password)

    def user_del(self, address: str) -> None:
        self.run_cli("user", "del", address)

    def wait_until_loaded(self, versions: Mapping[str, int] | None = None, **kw) -> list[dict]:
        """Every worker of this proxy runs with the stores' current (or the given)
        versions: a provisioning or routing change made through ``run_cli`` is live."""
        return wait_until_loaded(self.data_dir, versions, **kw)

    # -- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "SipledgerProcess":
        """Run `up` and wait for READY; again after ``stop()`` on the same data dir
        and ports (the embedded broker is new: ``kafka_bootstrap`` changes)."""
        if self.proc is not None and self.proc.poll() is None:
            raise SipledgerError("already started")
        self._ready.clear()
        cmd = self.cli + ["up", "--sip-port", str(self.sip_port), "--api-port", str(self.api_port)]
        self._stderr = open(self._stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     bufsize=1)
        self._reader = threading.Thread(target=self._read_stdout, name="sipledger-stdout",
                                        daemon=True)
        self._reader.start()

        def ready_or_exited() -> bool:
            self._record_descendants()
            if self.proc.poll() is not None:
                self._reader.join(timeout=2)          # it may have printed READY before exiting
            return self._ready.is_set() or self.proc.poll() is not None

        eventually(ready_or_exited, timeout=timeout, interval=0.05, fail=False)
        if not self._ready.is_set() and self.proc.poll() is not None:
            msg = self._failure(f"`sipledger up` exited with {self.proc.returncode} before READY")
            self.stop()
            raise SipledgerError(msg)
        if not self._ready.is_set():
            msg = self._failure(f"`sipledger up` printed no READY line within {timeout}s")
            self.stop()
            raise SipledgerError(msg)
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.stdout_lines.append(line)
            m = READY_RE.match(line.strip())
            if m and not self._ready.is_set():
                self.ready_line = line
                host, _, port = m.group("sip").rpartition(":")
                self.sip_addr = (host or HOST, int(port))
                self.kafka_bootstrap = m.group("kafka")
                api = re.search(r"\bapi=(\S+)", line)
                self.api_url = f"http://{api.group(1)}" if api else None
                self._ready.set()

    def _record_descendants(self) -> None:
        if self.proc is None:
            return
        for pid in _descendants(self.proc.pid):
            if pid not in self._known:
                self._known[pid] = _start_time(pid)

    def stderr_text(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _failure(self, what: str) -> str:
        return (f"{what}\ncmd: {' '.join(self.proc.args) if self.proc else ''}\n"
                f"--- stdout ---\n" + "\n".join(self.stdout_lines[-50:]) +
                f"\n--- stderr ({self._stderr_path}) ---\n{self.stderr_text()[-6000:]}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin_client(self) -> httpx.Client:
        """An admin token (made by the CLI) and a REST client with it, as ``self.client``;
        ``stop`` closes it."""
        token = self.run_cli("token", "create", "--role", "admin").stdout.strip().splitlines()[-1]
        self.client = httpx.Client(base_url=self.api_url or "", headers={"Authorization": f"Bearer {token}"},
                                   timeout=10)
        return self.client

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGINT (the supervisor stops its children), wait, SIGKILL; then
        SIGTERM/SIGKILL any descendant it started that is still alive."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is None:
            return None
        self._record_descendants()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._record_descendants()
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        leftovers = [p for p, st in self._known.items()
                     if _alive(p) and _start_time(p) == st]
        for sig, pause in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            if not leftovers:
                break
            for p in leftovers:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            eventually(lambda: not any(_alive(p) for p in leftovers), timeout=pause, fail=False)
            leftovers = [p for p in leftovers if _alive(p) and _start_time(p) == self._known[p]]
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return self.proc.returncode

    def __enter__(self) -> "SipledgerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------ events

def _decode(value: bytes) -> dict:
    try:
        import msgspec
        return msgspec.json.decode(value)
    except ImportError:                                  # pragma: no cover
        import json
        return json.loads(value)


def read_events(bootstrap: str, topic: str = "sip.events", call_id: str | None = None,
                timeout: float = 10.0, *,
                until: Callable[[list[dict]], bool] | None = None,
                min_count: int | None = None,
                settle: float = 0.0,
                types: Iterable[str] | None = None) -> list[dict]:
    """Consume ``topic`` from offset 0 (no consumer group) and return the
    decoded events (dicts) for ``call_id`` (all if None), in log order.

    Stops as soon as ``until(events)`` is true (or ``min_count`` events
    matched), then keeps reading ``settle`` seconds more to catch extra,
    unwanted events; otherwise returns what it has when ``timeout`` runs out —
    the caller's assertions then say what is missing.  ``types`` filters on
    the event ``type`` as well."""
    from kafka import KafkaConsumer, TopicPartition

    wanted_types = set(types) if types is not None else None
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             client_id=f"e2e-reader-{uuid.uuid4().hex[:8]}",
                             consumer_timeout_ms=int(max(timeout, 1) * 1000),
                             request_timeout_ms=30000, **TANSU_CONSUMER)
    events: list[dict] = []
    try:
        deadline = time.monotonic() + timeout
        partitions = eventually(lambda: consumer.partitions_for_topic(topic), timeout=timeout,
                                interval=0.1, fail=False)
        if not partitions:
            return events
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)

        def done() -> bool:
            if until is not None and until(events):
                return True
            if min_count is not None and until is None and len(events) >= min_count:
                return True
            return False

        def read_some() -> None:
            batches = consumer.poll(timeout_ms=100, max_records=500)
            for _tp, records in batches.items():
                for rec in records:
                    try:
                        ev = _decode(rec.value)
                    except Exception:
                        ev = {"type": "<undecodable>", "raw": rec.value}
                    if not isinstance(ev, dict):
                        continue
                    if call_id is not None and ev.get("call_id") != call_id:
                        continue
                    if wanted_types is not None and ev.get("type") not in wanted_types:
                        continue
                    ev.setdefault("_partition", rec.partition)
                    ev.setdefault("_offset", rec.offset)
                    ev.setdefault("_key", rec.key.decode(errors="replace") if rec.key else None)
                    events.append(ev)

        def read_until_done() -> bool:
            read_some()                      # the poll itself waits up to 100 ms for records
            return done()

        finished = eventually(read_until_done, timeout=max(0.0, deadline - time.monotonic()),
                              interval=0, fail=False)
        if finished and settle > 0:
            # a negative check: keep reading ``settle`` seconds for unwanted extra events
            settle_end = time.monotonic() + settle
            while time.monotonic() < settle_end:
                read_some()
    finally:
        consumer.close()
    return events


def event_types(events: Iterable[dict]) -> list[str]:
    return [e.get("type") for e in events]


def wait_for_types(*expected: str) -> Callable[[list[dict]], bool]:
    """``until`` predicate: every type in ``expected`` has been seen."""
    need = list(expected)

    def pred(events: list[dict]) -> bool:
        seen = [e.get("type") for e in events]
        return all(seen.count(t) >= need.count(t) for t in set(need))
    return pred


# ------------------------------------------------------- what the proxy has loaded

def store_versions(data_dir: str | os.PathLike) -> dict[str, int]:
    """The change-log versions of the provisioning and routing stores under
    ``data_dir`` (default SQLite URL), as the CLI left them."""
    from proxy.provisioning.store import ProvisioningStore, default_url
    from proxy.routing.store import RoutingStore

    url = default_url(Path(data_dir))
    versions = {}
    for name, store_class in (("provisioning", ProvisioningStore), ("routing", RoutingStore)):
        store = store_class(url)
        try:
            versions[name] = store.version()
        finally:
            store.close()
    return versions


def loaded_states(data_dir: str | os.PathLike) -> list[dict]:
    """What each running proxy worker has loaded (DATA_DIR/run/worker-N.loaded,
    proxy/runtime/loaded.py)."""
    from proxy.infra.config import RUN_DIR
    from proxy.runtime.loaded import read_loaded
    return read_loaded(Path(data_dir) / RUN_DIR)


def wait_until_loaded(data_dir: str | os.PathLike, versions: Mapping[str, int] | None = None, *,
                      gateways_down: Iterable[str] | None = None, workers: int | None = None,
                      timeout: float = 15.0) -> list[dict]:
    """Wait until every proxy worker of ``data_dir`` has applied a change.

    ``versions`` ({"provisioning": n, "routing": m}, either key optional)
    defaults to the stores' current versions, i.e. everything changed so far;
    a worker is there once its loaded versions are at least these.  With
    ``gateways_down``, the workers' probers must also hold (at least) those
    gateways down; with ``workers``, that many workers must have reported.
    Returns the workers' states; fails naming what they showed instead."""
    wanted = dict(store_versions(data_dir) if versions is None else versions)
    down = set(gateways_down or ())

    def applied() -> list[dict] | None:
        states = loaded_states(data_dir)
        if not states or (workers is not None and len(states) < workers):
            return None
        for state in states:
            if any(state.get(name, -1) < version for name, version in wanted.items()):
                return None
            if not down <= set(state.get("gateways_down", ())):
                return None
        return states

    states = eventually(applied, timeout=timeout, interval=0.05, fail=False)
    if not states:
        raise AssertionError(f"gave up after {timeout:g}s waiting for the proxy workers of {data_dir} to load "
                             f"{wanted}" + (f" with gateways down {sorted(down)}" if down else "") +
                             f"; they show {loaded_states(data_dir)}")
    return states
