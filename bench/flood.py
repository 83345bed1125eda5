"""A 20 s single-source OPTIONS flood against `sipledger up` while legitimate calls run.

    PYTHONPATH=. python bench/flood.py [--seconds 20] [--calls 10] [--probes 6]

Starts `sipledger up` with the default configuration (no config file) on a
free loopback port, provisions example.test with alice and bob, registers bob
on a SIPp callee, then at the same time:

- one sender process floods OPTIONS (a new transaction each, as fast as a tight
  Python ``sendto`` loop goes) from 127.0.0.9 for ``--seconds``;
- SIPp (alice, digest auth) places ``--calls`` calls to bob from 127.0.0.2, one per
  second, each held 1 s;
- ``--probes`` OPTIONS transactions from 127.0.0.3, spread over the flood, each
  retransmitted like a phone's (0.5, 1, 2 s) and given 3.5 s for its answer.

It prints: flood packets sent and rate, calls completed, probes answered, the
proxy worker's RSS before/after (and its peak), and what the pike published.
Everything started is stopped by PID.  Run it on two trees to compare (it
uses that tree's tests/harness and code): ``cd OTHER && PYTHONPATH=. python
/path/to/bench/flood.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.harness.floods import options, options_request, udp_client
from tests.harness.proxy import SipledgerProcess, _descendants
from tests.harness.sipp import SippUAS, free_udp_port, register, run_uac

DOMAIN = "example.test"
PASSWORDS = {"alice": "a1ice-pw", "bob": "s3cret"}
FLOOD_SOURCE, CALLER_SOURCE, PROBE_SOURCE = "127.0.0.9", "127.0.0.2", "127.0.0.3"

SENDER = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
senders = []
for src in sys.argv[4:]:              # one socket per source address, used in turn
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    lport = sock.getsockname()[1]
    template = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bKfl%d;rport\r\n"
                f"From: <sip:flood@{src}>;tag=f%d\r\nTo: <sip:{host}:{port}>\r\n"
                "Call-ID: flood-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    senders.append((sock, template))
addr = (host, port)
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for sock, template in senders:
        for _ in range(500 // len(senders) + 1):
            try:
                sock.sendto(template % (sent, sent, sent), addr)
            except OSError:
                pass
            sent += 1
print(sent, flush=True)
"""


def probe(proxy: tuple[str, int], source: str) -> bytes | None:
    """One OPTIONS transaction from ``source`` as a phone sends it: retransmitted
    after 0.5, 1 and 2 s (RFC 3261 Timer E); its final answer, or None after 3.5 s."""
    with udp_client(source) as sock:
        host, port = sock.getsockname()
        request = options_request(proxy, host, port)
        for wait in (0.5, 1.0, 2.0):
            sock.sendto(request, proxy)
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    break
                if not data.startswith(b"SIP/2.0 1"):
                    return data
    return None


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def worker_pids(root: int) -> list[int]:
    pids = []
    for pid in _descendants(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"proxy" in cmd and b"worker" in cmd:
            pids.append(pid)
    return pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--probes", type=int, default=6)
    parser.add_argument("--sources", type=int, default=1,
                        help="flood from this many addresses (127.0.1.x ...) instead of one: "
                             "each under the pike's density, for the load shedder")
    parser.add_argument("--config", default="",
                        help="TOML text added to the default configuration, e.g. '[overload]\\npolicy = \"drop\"'")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="flood-bench-"))
    config = args.config.replace("\\n", "\n") or None
    sl = SipledgerProcess(work / "data", free_udp_port(), config_text=config)   # None: the defaults
    uas = SippUAS("uas_answer", calls=args.calls, timeout=args.seconds + 60, workdir=work / "sipp")
    sender = None
    try:
        sl.domain_add(DOMAIN)
        for user, pw in PASSWORDS.items():
            sl.user_add(f"{user}@{DOMAIN}", pw)
        sl.start(timeout=90)
        assert sl.sip_addr is not None
        uas.start()
        reg = register(sl.sip_addr, "bob", DOMAIN, PASSWORDS["bob"], uas.contact_host, 3600,
                       workdir=work / "sipp")
        if not reg.ok:
            print("REGISTER failed:\n" + reg.describe(), file=sys.stderr)
            return 1
        workers = worker_pids(sl.proc.pid) if sl.proc else []
        rss_before = {pid: rss_mb(pid) for pid in workers}
        cpu_before = {pid: cpu_seconds(pid) for pid in workers}
        before_probe = options(sl.sip_addr, PROBE_SOURCE)

        started = time.monotonic()
        sources = ([FLOOD_SOURCE] if args.sources <= 1 else
                   [f"127.{1 + i // 65536}.{i // 256 % 256}.{1 + i % 250}" for i in range(args.sources)])
        sender = subprocess.Popen([sys.executable, "-c", SENDER, sl.sip_addr[0], str(sl.sip_addr[1]),
                                   str(args.seconds), *sources], stdout=subprocess.PIPE, text=True)
        calls_result: dict = {}

        def calls() -> None:
            calls_result["res"] = run_uac(
                "uac_call", sl.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN},
                timeout=args.seconds + 30, auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}",
                calls=args.calls, hold_ms=1000, workdir=work / "sipp",
                extra_args=["-i", CALLER_SOURCE, "-r", "1", "-l", str(args.calls)])

        time.sleep(1.0)                         # the flood is on before the first call
        caller = threading.Thread(target=calls)
        caller.start()
        answers: list[str] = []
        for i in range(args.probes):
            when = started + 1.5 + i * (args.seconds - 3) / max(1, args.probes)
            time.sleep(max(0.0, when - time.monotonic()))
            answer = probe(sl.sip_addr, PROBE_SOURCE)
            answers.append(answer[8:11].decode() if answer else "none")
        out, _ = sender.communicate(timeout=args.seconds + 30)
        flood_secs = time.monotonic() - started
        sent = int(out.strip() or 0)
        caller.join(timeout=args.seconds + 60)
        rss_after = {pid: rss_mb(pid) for pid in workers}
        cpu_used = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in workers}
        peak = {pid: rss_mb(pid, "VmHWM") for pid in workers}
        res = calls_result.get("res")
        pike_files = sorted((sl.data_dir / "run").glob("pike-worker-*.json"))
        pike = [json.loads(p.read_text()) for p in pike_files]

        print(f"flood: {sent} OPTIONS from {FLOOD_SOURCE if args.sources <= 1 else f'{args.sources} sources'} in {flood_secs:.1f} s "
              f"({sent / max(flood_secs, 1e-9):,.0f}/s)")
        print(f"legitimate calls completed: {res.successful if res else 0}/{args.calls} "
              f"(failed {res.failed if res else '?'})")
        print(f"OPTIONS from {PROBE_SOURCE} answered 200 during the flood: {answers.count('200')}/{args.probes} "
              f"(answers: {' '.join(answers)}; before the flood: {before_probe[8:11].decode() if before_probe else 'none'})")
        for pid in workers:
            print(f"worker {pid} RSS: {rss_before[pid]:.0f} MB before, {rss_after[pid]:.0f} MB after, "
                  f"peak {peak[pid]:.0f} MB; CPU {cpu_used[pid]:.1f} s over the flood")
        for state in pike:
            print(f"pike worker {state.get('worker')}: {state.get('blocked_count')} blocked "
                  f"{[b['source'] for b in state['blocked']][:5]}, "
                  f"counters {state.get('pike')}, overload {state.get('overload')}")
        if not pike_files:
            print("pike: no published state (code without the pike)")
        return 0
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait()
        uas.stop()
        sl.stop()
        print(f"(logs under {work})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
