"""A local rtpengine for `sipledger up` ([media] enabled and launch): the one command line, and its child.

``python -m proxy.runtime.rtpengine --data-dir D [--config F]`` keeps the
supervisor protocol (proxy/infra/supervise.py): it picks a free ng port on
loopback, starts rtpengine (userspace, no kernel table, no config file, dies
with this process), prints ``MEDIA READY ng=udp:127.0.0.1:PORT`` only once
an ng ``ping`` is answered, and records that address in
``DATA_DIR/run/media.json`` for the proxy workers.  A missing binary or an
rtpengine that exits before answering is one line, ``error: media: ...``.

``rtpengine_argv`` is the only place the command line is written; the test
harness (tests/harness/rtpengine.py) uses it too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..infra.config import RUN_DIR, Config, MediaSettings
from ..infra.runfiles import write_json_atomically
from ..infra.supervise import die_with_parent
from ..media.bencode import BencodeError, decode, encode

MEDIA_RUN_FILE = "media.json"        # DATA_DIR/run/media.json: {"ng": "udp:127.0.0.1:PORT"}
READY_TIMEOUT_S = 10.0


def rtpengine_argv(binary: str, interface: str, ng: tuple[str, int], port_min: int, port_max: int,
                   *, timeout: int = 60, silent_timeout: int = 3600, pidfile: Path | None = None,
                   log_level: int = 4, extra: tuple[str, ...] = ()) -> list[str]:
    """rtpengine in userspace (``--table=-1``: no kernel module), ignoring
    /etc/rtpengine (``--config-file=none``), in the foreground with its log on
    stderr.  ``timeout``/``silent_timeout`` are its own RTP timeouts (it
    deletes a call whose streams are all silent that long); the proxy's
    finer one-way detection polls ``query`` (proxy/core/media.py).
    ``log_level`` 4 (warnings): at its default (6) rtpengine logs every ng
    command, 68,000 lines for 4,400 calls, and the pipe that carries them
    slowed its replies enough to fail a 220 calls/s run that passes at 4."""
    argv = [binary, "--config-file=none", "--table=-1", f"--interface={interface}",
            f"--listen-ng={ng[0]}:{ng[1]}", f"--port-min={port_min}", f"--port-max={port_max}",
            "--foreground", "--log-stderr", f"--log-level={log_level}", f"--timeout={timeout}",
            f"--silent-timeout={silent_timeout}"]
    if pidfile is not None:
        argv.append(f"--pidfile={pidfile}")
    return argv + list(extra)


def backstop_timeout(media: MediaSettings) -> int:
    """rtpengine's own RTP timeout, a backstop behind the proxy's polls: it
    counts whole seconds from a floored stamp, so it can fire up to 1 s before
    ``rtp_timeout_seconds`` of real silence, and its verdict ("Unknown
    call-id" at the next poll) carries no better end than the last poll saw.
    Set past the latest moment the proxy's own rule decides (timeout + stamp
    second + one poll), it fires only when the proxy cannot (a worker gone)."""
    return math.ceil(media.rtp_timeout_seconds + media.poll_seconds) + 2


def ping(address: tuple[str, int], wait: float = 0.2) -> bool:
    """One ng ping; True on a pong."""
    cookie = secrets.token_hex(6).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        try:
            sock.sendto(cookie + b" " + encode({"command": "ping"}), address)
            data, _ = sock.recvfrom(4096)
        except OSError:
            return False
    head, _, body = data.partition(b" ")
    try:
        reply = decode(body)
    except BencodeError:
        return False
    return head == cookie and isinstance(reply, dict) and reply.get("result") == "pong"


def free_loopback_port(preferred: int = 0) -> int:
    """``preferred`` if it is free on 127.0.0.1 (the ng port stays the same across restarts), else any."""
    for port in ((preferred, 0) if preferred else (0,)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free UDP port on 127.0.0.1")


def media_interface(config: Config) -> str:
    """The address rtpengine announces in SDP: [media] interface, else the proxy's."""
    return config.media.interface or config.proxy.advertised_host or config.proxy.listen


def read_ng(data_dir: Path) -> str | None:
    """The launched rtpengine's ng url (udp:IP:PORT), None before it is up."""
    try:
        return str(json.loads((data_dir / RUN_DIR / MEDIA_RUN_FILE).read_text())["ng"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def launch(media: MediaSettings, interface: str, data_dir: Path, stopping: threading.Event) -> int:
    if not os.access(media.binary, os.X_OK):
        print(f"error: media: rtpengine binary {media.binary} not found (install rtpengine-daemon "
              "or set [media] binary, or launch = false)", file=sys.stderr, flush=True)
        return 1
    previous = read_ng(data_dir)
    preferred = int(previous.rsplit(":", 1)[1]) if previous else 0
    (data_dir / RUN_DIR / MEDIA_RUN_FILE).unlink(missing_ok=True)    # workers wait for the new one
    ng = ("127.0.0.1", free_loopback_port(preferred))
    argv = rtpengine_argv(media.binary, interface, ng, media.port_min, media.port_max,
                          timeout=backstop_timeout(media))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent(), text=True, errors="replace")
    last: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)           # rtpengine's log goes to the media child's log
            if line.strip():
                last[:] = [line.strip()]
    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ping(ng):
        if proc.poll() is not None or time.monotonic() > deadline or stopping.is_set():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            time.sleep(0.1)                  # the drain thread's last line
            why = last[0] if last else f"exited with status {proc.returncode}"
            if "address already in use" in why.lower() or "bind" in why.lower():
                why = f"a port is busy ({interface}:{media.port_min}-{media.port_max}): {why}"
            print(f"error: media: rtpengine did not start: {why[:300]}", file=sys.stderr, flush=True)
            return 1
    url = f"udp:{ng[0]}:{ng[1]}"
    write_json_atomically(data_dir / RUN_DIR / MEDIA_RUN_FILE, {"ng": url, "pid": proc.pid})
    print(f"MEDIA READY ng={url} interface={interface} ports={media.port_min}-{media.port_max}", flush=True)
    while not stopping.wait(0.5):
        if proc.poll() is not None:
            print(f"error: media: rtpengine exited with status {proc.returncode}", file=sys.stderr, flush=True)
            return 1
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.runtime.rtpengine")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--config")
    parser.add_argument("--bootstrap")       # `up` passes it to every service; unused here
    args = parser.parse_args(argv)
    from ..infra.config import load
    config = load(args.config)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    return launch(config.media, media_interface(config), Path(args.data_dir), stopping)


if __name__ == "__main__":
    sys.exit(main())
