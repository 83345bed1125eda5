"""Run SIPp scenarios from tests: a background UAS and a one-shot UAC.

Every SIPp process binds 127.0.0.1 only (-i 127.0.0.1 -bind_local), runs in
its own work directory (SIPp writes its logs into the current directory), is
bounded twice (SIPp's own -timeout and a subprocess timeout) and is stopped by
PID: a hanging SIPp can never hang the suite.

SIPp 3.6.1 facts this module relies on (see tests/sipp/*.xml):
  * ``-key name value`` fills ``[name]`` in a scenario; a scenario using a key
    that was not given refuses to load ("Unsupported keyword").
  * ``-set name value`` sets a ``<Global variables="name"/>`` variable ([$name]).
  * ``[authentication]`` takes its credentials from ``-au``/``-ap``; keys or
    [fieldN] nested inside ``[authentication username=.. password=..]`` are not
    expanded.  The digest ``uri`` is ``sip:`` + ``-auth_uri`` (default: the
    remote ip:port), so we pass the Request-URI's user@host.
  * Exit status: 0 = every call succeeded (also when no call ran at all),
    1 = at least one failed, 97/99 = stopped by command / no call processed,
    255 = fatal error.  Count calls from the statistics file, not the status.
  * ``[last_Via:]`` joins several Via headers into one comma-separated line.
"""
from __future__ import annotations

import csv
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.poll import eventually
from tests.harness.procs import terminate
from tests.harness.xdist import worker_slice

HOST = "127.0.0.1"
SCENARIO_DIR = Path(__file__).resolve().parents[1] / "sipp"
SIPP = os.environ.get("SIPP_BIN") or shutil.which("sipp") or "sipp"

_TRANSPORTS = {"udp": "u1", "tcp": "t1"}


def sipp_available() -> bool:
    return shutil.which(SIPP) is not None


def scenario_path(name: str | os.PathLike) -> Path:
    """``"uac_call"`` / ``"uac_call.xml"`` / a path -> the scenario file."""
    p = Path(name)
    if p.is_absolute() or p.exists():
        return p
    if p.suffix != ".xml":
        p = p.with_suffix(".xml")
    return SCENARIO_DIR / p


# --------------------------------------------------------------------------- ports

def _port_free(port: int, host: str = HOST) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


_handed_out: set[int] = set()


# Ports for the servers tests start: below the rtpengine media ranges (16384+,
# 20000-29999 in tests) and outside Linux's ephemeral range (32768-60999).  A
# port the kernel picked from the ephemeral range could be taken, between its
# choice and `up` binding it seconds later, by any client socket on the host
# (a Kafka connection's local port): "SIP port ... is in use".
TEST_PORTS = worker_slice(range(10000, 16384))     # one slice per pytest-xdist process


def free_udp_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP on ``host`` (SIP uses both), from
    ``TEST_PORTS``; ports handed out earlier in this process are skipped so
    two callers never get the same one."""
    for _ in range(500):
        port = random.choice(TEST_PORTS)
        if port in _handed_out:
            continue
        if _port_free(port, host):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free UDP+TCP port found on %s" % host)


def free_udp_ports(n: int, host: str = HOST) -> list[int]:
    return [free_udp_port(host) for _ in range(n)]


def _hexaddr(host: str, port: int) -> str:
    a, b, c, d = (int(x) for x in host.split("."))
    return "%02X%02X%02X%02X:%04X" % (d, c, b, a, port)


def port_bound(port: int, transport: str = "udp", host: str = HOST) -> bool:
    """Is something bound to host:port (UDP) / listening on it (TCP)?  Reads
    /proc/net so it never disturbs the socket it looks at."""
    wanted = {_hexaddr(host, port), _hexaddr("0.0.0.0", port)}
    table = "/proc/net/udp" if transport == "udp" else "/proc/net/tcp"
    try:
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] in wanted and (transport == "udp" or parts[3] == "0A"):
                    return True
    except OSError:
        pass
    return False


# ----------------------------------------------------------------- message log

@dataclass
class SipMessage:
    """One message from SIPp's -message_file log."""
    direction: str                  # "sent" | "received"
    transport: str                  # "UDP" | "TCP"
    timestamp: str
    raw: str                        # the SIP message, CRLF line ends removed
    start_line: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0")

    @property
    def method(self) -> str | None:
        return self.start_line.split(" ", 1)[0] if self.is_request else None

    @property
    def request_uri(self) -> str | None:
        return self.start_line.split(" ")[1] if self.is_request else None

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        return int(self.start_line.split(" ")[1])

    @property
    def reason(self) -> str | None:
        if self.is_request:
            return None
        parts = self.start_line.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    @property
    def cseq_method(self) -> str | None:
        v = self.header("CSeq")
        return v.split()[-1] if v else None

    _COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
                "l": "content-length", "c": "content-type", "k": "supported"}

    def headers_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive, compact forms
        understood), comma-joined lists of Via/Route/Record-Route split."""
        want = self._COMPACT.get(name.lower(), name.lower())
        out = []
        for n, v in self.headers:
            if self._COMPACT.get(n.lower(), n.lower()) == want:
                if want in ("via", "route", "record-route"):
                    out.extend(_split_commas(v))
                else:
                    out.append(v)
        return out

    def header(self, name: str) -> str | None:
        values = self.headers_all(name)
        return values[0] if values else None

    def tag(self, name: str) -> str | None:
        """The ;tag= of From/To."""
        v = self.header(name)
        if not v:
            return None
        m = re.search(r";\s*tag=([^;>\s,]+)", v.split(">")[-1] if ">" in v else v)
        return m.group(1) if m else None

    def __repr__(self) -> str:
        return f"<SipMessage {self.direction} {self.start_line!r}>"


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside <> and quotes."""
    out, cur, depth, quoted = [], [], 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


_SEP = re.compile(r"^-{20,}\s*(.*)$")
_HEAD = re.compile(r"^(UDP|TCP|TLS|SCTP) message (sent|received)")


def _parse_sip(text: str) -> tuple[str, list[tuple[str, str]], str]:
    lines = text.split("\n")
    start = lines[0].strip() if lines else ""
    headers: list[tuple[str, str]] = []
    i = 1
    while i < len(lines):
        line = lines[i]
        if line.strip() == "":
            i += 1
            break
        if line[:1] in (" ", "\t") and headers:      # folded line
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
        elif ":" in line:
            n, v = line.split(":", 1)
            headers.append((n.strip(), v.strip()))
        i += 1
    body = "\n".join(lines[i:]).strip("\n")
    return start, headers, body


def parse_message_log(text: str) -> list[SipMessage]:
    """Parse SIPp's -trace_msg log.  "Unexpected ... message received" blocks
    repeat a message already logged and are skipped."""
    messages: list[SipMessage] = []
    blocks: list[tuple[str, list[str]]] = []
    cur: list[str] | None = None
    stamp = ""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        m = _SEP.match(line)
        if m:
            if cur is not None:
                blocks.append((stamp, cur))
            stamp, cur = m.group(1).strip(), []
            continue
        if cur is not None:
            cur.append(line)
    if cur is not None:
        blocks.append((stamp, cur))
    for stamp, lines in blocks:
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            continue
        head = _HEAD.match(lines[0])
        if not head:
            continue
        rest = lines[1:]
        while rest and not rest[0].strip():
            rest.pop(0)
        raw = "\n".join(rest).rstrip("\n")
        start, headers, body = _parse_sip(raw)
        if not start:
            continue
        messages.append(SipMessage(direction=head.group(2), transport=head.group(1),
                                   timestamp=stamp, raw=raw, start_line=start,
                                   headers=headers, body=body))
    return messages


def read_stats(path: Path) -> dict[str, str]:
    """Last data row of a SIPp -trace_stat CSV (';'-separated), as a dict."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    rows = [r for r in csv.reader(text.splitlines(), delimiter=";") if r]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def _count(stats: Mapping[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


# ------------------------------------------------------------------- results

@dataclass
class SippResult:
    returncode: int | None          # None: killed after the hard timeout
    successful: int
    failed: int
    messages_log_text: str
    stdout: str = ""
    errors_log_text: str = ""
    logs_text: str = ""             # <log> actions (-trace_logs)
    stats: dict = field(default_factory=dict)
    cmd: list = field(default_factory=list)
    timed_out: bool = False

    @property
    def messages(self) -> list[SipMessage]:
        return parse_message_log(self.messages_log_text)

    def received(self, method_or_status: str | int | None = None) -> list[SipMessage]:
        return _select(self.messages, "received", method_or_status)

    def sent(self, method_or_status: str | int | None = None) -> list[SipMessage]:
        return _select(self.messages, "sent", method_or_status)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def describe(self) -> str:
        """Everything useful for an assertion message."""
        tail = self.stdout[-1500:]
        return (f"sipp rc={self.returncode} successful={self.successful} failed={self.failed}"
                f" timed_out={self.timed_out}\ncmd: {' '.join(map(str, self.cmd))}\n"
                f"--- errors ---\n{self.errors_log_text[-3000:]}\n"
                f"--- messages ---\n{self.messages_log_text[-6000:]}\n--- stdout tail ---\n{tail}")


def _select(msgs: Iterable[SipMessage], direction: str, what) -> list[SipMessage]:
    out = []
    for m in msgs:
        if m.direction != direction:
            continue
        if what is None or (isinstance(what, int) and m.status == what) or \
                (isinstance(what, str) and m.method == what.upper()):
            out.append(m)
    return out


# ------------------------------------------------------------- command lines

def _common_args(scenario: Path, port: int, transport: str, workdir: Path, name: str,
                 keys: Mapping[str, object] | None, variables: Mapping[str, object] | None,
                 hold_ms: int | None, timeout: float, calls: int,
                 auth: tuple[str, str] | None, auth_uri: str | None,
                 extra_args: Sequence[str]) -> list[str]:
    if transport not in _TRANSPORTS:
        raise ValueError(f"transport must be one of {sorted(_TRANSPORTS)}")
    extra_args = list(extra_args)
    host = HOST
    if "-i" in extra_args:                   # another loopback address (127.0.0.2 …)
        at = extra_args.index("-i")
        host = extra_args[at + 1]
        del extra_args[at:at + 2]
    args = [SIPP, "-sf", str(scenario), "-i", host, "-bind_local", "-p", str(port),
            "-t", _TRANSPORTS[transport], "-m", str(calls), "-nostdin",
            "-timeout", f"{max(1, int(round(timeout)))}s", "-timeout_error",
            "-trace_msg", "-message_file", str(workdir / f"{name}_messages.log"),
            "-trace_err", "-error_file", str(workdir / f"{name}_errors.log"),
            "-trace_logs", "-log_file", str(workdir / f"{name}_logs.log"),
            "-trace_stat", "-stf", str(workdir / f"{name}_stats.csv"), "-fd", "1",
            "-trace_screen", "-screen_file", str(workdir / f"{name}_screen.log")]
    if hold_ms is not None:
        args += ["-d", str(int(hold_ms))]
    if auth is not None:
        args += ["-au", str(auth[0]), "-ap", str(auth[1])]
    if auth_uri is not None:
        args += ["-auth_uri", auth_uri]
    for k, v in (keys or {}).items():
        args += ["-key", str(k), str(v)]
    for k, v in (variables or {}).items():
        args += ["-set", str(k), str(v)]
    args += list(extra_args)
    return args


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _collect(workdir: Path, name: str, rc, stdout: str, cmd, timed_out: bool) -> SippResult:
    stats = read_stats(workdir / f"{name}_stats.csv")
    return SippResult(returncode=rc,
                      successful=_count(stats, "SuccessfulCall(C)"),
                      failed=_count(stats, "FailedCall(C)"),
                      messages_log_text=_read(workdir / f"{name}_messages.log"),
                      stdout=stdout, errors_log_text=_read(workdir / f"{name}_errors.log"),
                      logs_text=_read(workdir / f"{name}_logs.log"),
                      stats=stats, cmd=cmd, timed_out=timed_out)


def _kill(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM (SIPp then writes its final statistics), SIGKILL if it lingers."""
    terminate(proc, grace)


def _workdir(workdir: str | os.PathLike | None, prefix: str) -> Path:
    if workdir is not None:
        p = Path(workdir)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return Path(tempfile.mkdtemp(prefix=prefix))


# ---------------------------------------------------------------------- UAC

def run_uac(scenario: str | os.PathLike, proxy_addr: tuple[str, int] | str,
            keys: Mapping[str, object] | None = None, timeout: float = 15.0, *,
            auth: tuple[str, str] | None = None, auth_uri: str | None = None,
            variables: Mapping[str, object] | None = None, hold_ms: int | None = None,
            transport: str = "udp", local_port: int | None = None, calls: int = 1,
            workdir: str | os.PathLike | None = None, name: str | None = None,
            extra_args: Sequence[str] = ()) -> SippResult:
    """Run a client scenario to completion against ``proxy_addr`` and return
    what happened.  Never raises on a failed call (assert on the result);
    never runs longer than ``timeout`` + a few seconds."""
    scen = scenario_path(scenario)
    if not scen.exists():
        raise FileNotFoundError(scen)
    if isinstance(proxy_addr, tuple):
        target = f"{proxy_addr[0]}:{proxy_addr[1]}"
    else:
        target = proxy_addr
    port = local_port or free_udp_port()
    wd = _workdir(workdir, "sipp-uac-")
    name = name or f"uac_{scen.stem}_{port}"
    cmd = _common_args(scen, port, transport, wd, name, keys, variables, hold_ms,
                       timeout, calls, auth, auth_uri, extra_args) + [target]
    out_path = wd / f"{name}_stdout.log"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=wd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
            rc = None
        except BaseException:
            _kill(proc, grace=1)
            raise
    return _collect(wd, name, rc, _read(out_path), cmd, timed_out)


# ---------------------------------------------------------------------- UAS

class SippUAS:
    """A SIPp server scenario in the background on a free 127.0.0.1 port.

        uas = SippUAS("uas_answer").start()
        ... uas.port ...
        rc = uas.wait(10)          # exit status (None if still running)
        res = uas.result()         # SippResult: counts + message log
        uas.stop()                 # always safe; by PID

    Usable as a context manager (start on enter, stop on exit)."""

    def __init__(self, scenario: str | os.PathLike, keys: Mapping[str, object] | None = None, *,
                 port: int | None = None, variables: Mapping[str, object] | None = None,
                 hold_ms: int | None = None, transport: str = "udp", calls: int = 1,
                 timeout: float = 30.0, workdir: str | os.PathLike | None = None,
                 name: str | None = None, extra_args: Sequence[str] = ()):
        self.scenario = scenario_path(scenario)
        if not self.scenario.exists():
            raise FileNotFoundError(self.scenario)
        self.keys = dict(keys or {})
        self.variables = dict(variables or {})
        self.port = port or free_udp_port()
        self.hold_ms = hold_ms
        self.transport = transport
        self.calls = calls
        self.timeout = timeout
        self.workdir = _workdir(workdir, "sipp-uas-")
        self.name = name or f"uas_{self.scenario.stem}_{self.port}"
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.cmd: list[str] = []
        self._out = None

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def contact_host(self) -> str:
        """ip:port for a REGISTER Contact pointing at this UAS."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, ready_timeout: float = 5.0) -> "SippUAS":
        self.cmd = _common_args(self.scenario, self.port, self.transport, self.workdir,
                                self.name, self.keys, self.variables, self.hold_ms,
                                self.timeout, self.calls, None, None, self.extra_args)
        self._out = open(self.workdir / f"{self.name}_stdout.log", "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT)

        def bound() -> bool:
            if self.proc.poll() is not None:
                text = self.stdout()
                self._close()
                raise RuntimeError(f"sipp UAS exited with {self.proc.returncode} before binding "
                                   f"{self.port}\ncmd: {' '.join(self.cmd)}\n{text[-2000:]}")
            return port_bound(self.port, self.transport)

        if eventually(bound, timeout=ready_timeout, interval=0.02, fail=False):
            return self
        self.stop()
        raise RuntimeError(f"sipp UAS did not bind {HOST}:{self.port}/{self.transport} within "
                           f"{ready_timeout}s\ncmd: {' '.join(self.cmd)}\n{self.stdout()[-2000:]}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Wait for SIPp to finish its calls (-m); its exit status, or None
        if it is still running after ``timeout`` seconds (it is not stopped)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        if self.proc is not None:
            _kill(self.proc)
        self._close()
        return self.proc.returncode if self.proc else None

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def stdout(self) -> str:
        return _read(self.workdir / f"{self.name}_stdout.log")

    def messages_log_text(self) -> str:
        return _read(self.workdir / f"{self.name}_messages.log")

    def messages(self) -> list[SipMessage]:
        """Messages so far (SIPp flushes its message log per message)."""
        return parse_message_log(self.messages_log_text())

    def received(self, method_or_status: str | int | None = None) -> list[SipMessage]:
        return _select(self.messages(), "received", method_or_status)

    def sent(self, method_or_status: str | int | None = None) -> list[SipMessage]:
        return _select(self.messages(), "sent", method_or_status)

    def wait_for(self, method_or_status: str | int, timeout: float, count: int = 1) -> list[SipMessage]:
        """Poll the message log until ``count`` received messages match; returns
        what matched by then either way (the caller asserts)."""
        found: list[SipMessage] = []

        def enough() -> bool:
            found[:] = self.received(method_or_status)
            return len(found) >= count

        eventually(enough, timeout=timeout, fail=False)
        return found

    def result(self) -> SippResult:
        rc = self.proc.poll() if self.proc else None
        return _collect(self.workdir, self.name, rc, self.stdout(), self.cmd, False)

    def __enter__(self) -> "SippUAS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=2)
        except Exception:
            pass


# ----------------------------------------------------------------- shortcuts

def register(registrar: tuple[str, int], user: str, domain: str, password: str,
             contact_host: str, expires: int = 300, *, transport: str = "udp",
             timeout: float = 10.0, workdir=None, scenario: str = "register") -> SippResult:
    """REGISTER user@domain -> contact_host with digest auth (register.xml)."""
    return run_uac(scenario, registrar,
                   {"user": user, "domain": domain, "contact_host": contact_host,
                    "expires": expires},
                   timeout, auth=(user, password), auth_uri=domain, transport=transport,
                   workdir=workdir)


def call_keys(caller: str, callee: str, domain: str) -> dict[str, str]:
    return {"caller": caller, "callee": callee, "domain": domain}


def render_scenario(template: str, workdir: str | os.PathLike, **values: object) -> Path:
    """A copy of a scenario template with [name] placeholders filled in (for the
    parts SIPp checks at load time, like a response's status code)."""
    text = scenario_path(template).read_text()
    for name, value in values.items():
        text = text.replace(f"[{name}]", str(value))
    out = Path(workdir) / f"{Path(template).stem}_{'_'.join(str(v) for v in values.values())}.xml"
    out = out.with_name(out.name.replace(" ", "-"))
    out.write_text(text)
    return out
