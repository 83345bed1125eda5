"""Worker RSS under hostile input, against a real proxy worker process.

    python bench/hostile_rss.py [--repo PATH] [--count 30000] [--settle 40]

Starts one worker (bench/hostile_common.py) from ``--repo`` (default: this
checkout; point it at a checkout of an older commit to measure "before"),
relaying initial INVITEs to a sink here that answers 486.  Then sends
``--count`` malformed requests (a third Latin-1 INVITEs, a third OPTIONS with a
30 KB Via parameter, a third assorted malformed Vias/Routes/CSeqs), waits
``--settle`` s for transactions to end, then ``--count`` valid requests
(OPTIONS and INVITEs; finals are ACKed as a phone does) and waits again,
twice (``--valid-rounds``): RSS that keeps growing round after round is a
leak, RSS that stays is the peak of live transactions (Python keeps freed
memory for reuse).  Prints RSS at each step, the answers
received, and the worker's log size and traceback count."""
from __future__ import annotations

import argparse
import collections
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_common import HOST, Worker, start_broker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def request(method: str, n: int, port: int, *, display: bytes = b'"Alice"', via_extra: bytes = b"",
            via_host: bytes = b"127.0.0.1", extra: bytes = b"", cseq: bytes | None = None) -> bytes:
    body = b"v=0\r\n" if method == "INVITE" else b""
    ruri = b"sip:bob@example.test" if method == "INVITE" else b"sip:example.test"
    m = method.encode()
    lines = [m + b" " + ruri + b" SIP/2.0",
             b"Via: SIP/2.0/UDP " + via_host + b":%d;branch=z9hG4bKh%d;rport" % (port, n) + via_extra,
             b"From: " + display + b" <sip:alice@example.test>;tag=t%d" % n,
             b"To: <sip:bob@example.test>", b"Call-ID: hostile-%d" % n,
             b"CSeq: " + (cseq if cseq is not None else b"1 " + m), b"Max-Forwards: 70",
             b"Contact: <sip:alice@127.0.0.1:%d>" % port]
    if extra:
        lines.append(extra)
    if body:
        lines.append(b"Content-Type: application/sdp")
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def malformed(n: int, port: int) -> bytes:
    kind = n % 3
    if kind == 0:
        return request("INVITE", n, port, display=b'"Jos\xe9"')
    if kind == 1:
        return request("OPTIONS", n, port, via_extra=b";x=%d" % n + b"a" * 30_000)
    odd = (n // 3) % 5
    if odd == 0:
        return request("OPTIONS", n, port, via_extra=b";rport=abc")
    if odd == 1:
        return request("OPTIONS", n, port, via_host=b"127.0\x01.0.1")
    if odd == 2:
        return request("OPTIONS", n, port, extra=b"Route: ,")
    if odd == 3:
        return request("OPTIONS", n, port, cseq=b"x OPTIONS")
    return request("CANCEL", n, port)


def valid(n: int, port: int) -> bytes:
    return request("INVITE" if n % 2 else "OPTIONS", n, port)


class Sink(threading.Thread):
    """The next hop: answers every INVITE with 486 Busy Here."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = False

    def run(self):
        while not self.stopping:
            try:
                data, addr = self.sock.recvfrom(70000)
            except TimeoutError:
                continue
            if not data.startswith(b"INVITE "):
                continue
            head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            keep = [h for h in head[1:] if h.split(b":", 1)[0].lower() in
                    (b"via", b"from", b"to", b"call-id", b"cseq")]
            keep = [h + b";tag=busy" if h.lower().startswith(b"to:") else h for h in keep]
            self.sock.sendto(b"SIP/2.0 486 Busy Here\r\n" + b"\r\n".join(keep) +
                             b"\r\nContent-Length: 0\r\n\r\n", addr)


class Client(threading.Thread):
    """Sends the load and counts the answers by status."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.answers: collections.Counter = collections.Counter()
        self.stopping = False
        self.worker_port = 0

    def run(self):
        while not self.stopping:
            try:
                data, _ = self.sock.recvfrom(70000)
            except TimeoutError:
                continue
            status = data.split(b" ", 2)[1]
            self.answers[status.decode(errors="replace")] += 1
            if status >= b"300" and b" INVITE\r\n" in data:
                self.sock.sendto(ack_for(data), (HOST, self.worker_port))   # as a phone does


    def send(self, worker: Worker, make, count: int, rate: int) -> None:
        start = time.monotonic()
        for n in range(count):
            self.sock.sendto(make(n, self.port), (HOST, worker.port))
            if n % 50 == 49:                    # paced: loopback buffers, not the proxy, would drop
                ahead = (n + 1) / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)


def ack_for(response: bytes) -> bytes:
    """The ACK a UAC sends for a non-2xx final (§17.1.1.3): the response's
    top Via, From, To (with its tag), Call-ID, and CSeq with method ACK."""
    head = response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep, via_seen = [], False
    for line in head:
        name = line.split(b":", 1)[0].strip().lower()
        if name == b"via" and not via_seen:
            via_seen = True
            keep.append(line)
        elif name in (b"from", b"to", b"call-id"):
            keep.append(line)
        elif name == b"cseq":
            keep.append(line.replace(b"INVITE", b"ACK"))
    return (b"ACK sip:bob@example.test SIP/2.0\r\n" + b"\r\n".join(keep) +
            b"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose proxy is measured")
    p.add_argument("--count", type=int, default=30_000)
    p.add_argument("--malformed", type=int, default=None, help="malformed requests (default: --count)")
    p.add_argument("--rate", type=int, default=2000, help="requests per second")
    p.add_argument("--no-broker", action="store_true", help="no Kafka: events wait in the outbox")
    p.add_argument("--settle", type=float, default=40.0, help="seconds for transactions to end")
    p.add_argument("--valid-rounds", type=int, default=2)
    args = p.parse_args()
    sink, client = Sink(), Client()
    sink.start()
    client.start()
    broker = None if args.no_broker else start_broker(Path(tempfile.mkdtemp(prefix="hostile-broker-")))
    worker = Worker(args.repo, sink.port, broker.bootstrap if broker else None)
    client.worker_port = worker.port
    try:
        time.sleep(1.0)
        print(f"repo {args.repo}")
        print(f"worker RSS at start:                    {worker.rss_mb():7.1f} MB")
        bad = args.count if args.malformed is None else args.malformed
        client.send(worker, malformed, bad, args.rate)
        time.sleep(args.settle if bad else 0)
        malformed_answers = dict(client.answers)
        client.answers.clear()
        log_after_malformed = worker.log_bytes()
        print(f"after {bad} malformed (+{args.settle:.0f} s): {worker.rss_mb():7.1f} MB   "
              f"answers {malformed_answers}")
        for round_ in range(args.valid_rounds):   # a second round: growth would be a leak
            client.answers.clear()
            offset = 10_000_000 * (round_ + 1)
            client.send(worker, lambda n, port, offset=offset: valid(n + offset, port), args.count, args.rate)
            time.sleep(args.settle)
            print(f"after {args.count} valid #{round_ + 1}  (+{args.settle:.0f} s): {worker.rss_mb():7.1f} MB   "
                  f"answers {dict(client.answers)}")
        print(f"worker log: {log_after_malformed / 1024:.0f} KB after the malformed phase "
              f"({log_after_malformed / max(bad, 1):.0f} B per request), "
              f"{worker.log_bytes() / 1024:.0f} KB in all, {worker.tracebacks()} tracebacks")
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
        sink.stopping = client.stopping = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
