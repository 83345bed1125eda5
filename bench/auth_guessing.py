"""Password guessing against a real proxy process: how many guesses per second
get a password verdict from one source, before and after the lockout.

Starts an embedded broker and `python -m proxy run` (one worker, credit control
off) on a fresh data dir with one subscriber, fetches one genuine challenge,
then sends wrong-password guesses (each with the same nonce and a new nc, up to
``--window`` in flight) for ``--seconds``.  Every answer is classified:

  verdict   403 after a password check (the guesser learns "wrong password")
  locked    403 "too many failures": refused before any password check
  challenge 407 (a fresh challenge, no verdict)

and the rates are printed for the whole run and for the time after the first
"locked" answer.  Finally the right password is tried from the same source.

    .venv/bin/python bench/auth_guessing.py [--seconds 5] [--window 32]

Run it on an older tree (PYTHONPATH) for the "before" figures.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or
                            Path(__file__).resolve().parents[1])))

from api.broker import EmbeddedBroker, free_port  # noqa: E402
from proxy.core.digest import compute_ha1, compute_response, parse_digest  # noqa: E402
from proxy.provisioning.store import ProvisioningStore, default_url  # noqa: E402

DOMAIN, USER, PASSWORD = "example.test", "alice", "right-password"
URI = f"sip:bob@{DOMAIN}"     # to a user: keep-alive OPTIONS to the proxy itself are never challenged


def options(port: int, n: int, creds: str | None = None) -> bytes:
    auth = f"Proxy-Authorization: {creds}\r\n" if creds else ""
    return (f"OPTIONS {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKb{n};rport\r\n"
            f"From: <sip:{USER}@{DOMAIN}>;tag=t{n}\r\nTo: <{URI}>\r\nCall-ID: guess-{n}\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n").encode()


def credentials(nonce: str, password: str, nc: int) -> str:
    ha1 = compute_ha1("MD5", USER, DOMAIN, password)
    response = compute_response("MD5", ha1, nonce, "OPTIONS", URI, "auth", f"{nc:08x}", "bench")
    return (f'Digest username="{USER}", realm="{DOMAIN}", nonce="{nonce}", uri="{URI}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce="bench"')


def status_line(data: bytes) -> tuple[int, str]:
    first = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    return int(first[1]), first[2] if len(first) > 2 else ""


def start_proxy(data: Path, broker: EmbeddedBroker) -> tuple[subprocess.Popen, int]:
    store = ProvisioningStore(default_url(data))
    store.create_schema()
    store.add_domain(DOMAIN)
    store.add_user(USER, DOMAIN, PASSWORD)
    store.close()
    (data / "sipledger.toml").write_text("[authorization]\nenabled = false\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "run", "--data-dir", str(data),
                             "--config", str(data / "sipledger.toml"), "--sip-port", str(port),
                             "--bootstrap", broker.bootstrap],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PROXY READY"):
        proc.kill()
        raise SystemExit(f"proxy did not start: {line!r}")
    return proc, port


def guess(proxy_port: int, seconds: float, window: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    me = sock.getsockname()[1]
    dest = ("127.0.0.1", proxy_port)
    sock.sendto(options(me, 0), dest)
    sock.settimeout(5)
    while True:
        data = sock.recv(65535)
        if status_line(data)[0] == 407:
            break
    text = data.decode("latin-1")
    header = next(line for line in text.split("\r\n") if line.lower().startswith("proxy-authenticate:"))
    nonce = parse_digest(header.split(":", 1)[1].strip())["nonce"]

    sock.setblocking(False)
    counts = {"verdict": 0, "locked": 0, "challenge": 0, "other": 0}
    first_locked = None
    after = {"verdict": 0, "locked": 0}
    n, in_flight = 0, 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        while in_flight < window:
            n += 1
            sock.sendto(options(me, n, credentials(nonce, f"guess-{n}", n)), dest)
            in_flight += 1
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            in_flight = 0          # lost or dropped: refill the window
            continue
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            status, reason = status_line(data)
            if status < 200:
                continue
            in_flight -= 1
            kind = ("locked" if status == 403 and "too many" in reason else
                    "verdict" if status == 403 else "challenge" if status == 407 else "other")
            counts[kind] += 1
            if kind == "locked" and first_locked is None:
                first_locked = time.perf_counter()
            if first_locked is not None and kind in after:
                after[kind] += 1
    elapsed = time.perf_counter() - start
    sock.setblocking(True)
    sock.sendto(options(me, n + 1, credentials(nonce, PASSWORD, n + 1)), dest)
    while True:                  # skip the answers to guesses still in flight
        data = sock.recv(65535)
        if f"Call-ID: guess-{n + 1}\r\n".encode() in data and status_line(data)[0] >= 200:
            break
    right = status_line(data)

    print(f"answers in {elapsed:.1f} s from one source: {counts}")
    print(f"password verdicts: {counts['verdict']} = {counts['verdict'] / elapsed:,.0f} guesses/s accepted overall")
    if first_locked is not None:
        locked_for = end - first_locked
        print(f"locked out after {counts['verdict']} verdicts, {first_locked - start:.3f} s in")
        print(f"after the lockout: {after['verdict'] / locked_for:,.1f} guesses/s accepted, "
              f"{after['locked'] / locked_for:,.0f} requests/s refused unchecked")
    else:
        print("no lockout seen")
    print(f"then the right password from the same source: {right[0]} {right[1]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        proc, port = start_proxy(Path(tmp) / "data", broker)
        try:
            guess(port, args.seconds, args.window)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
