"""A bare SIP endpoint on loopback UDP: send hand-written requests, collect what arrives."""
from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable

HOST = "127.0.0.1"


class UdpPeer:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[str] = []
        # answer(message) -> reply text or None: a phone that answers what it receives
        self.answer: Callable[[str], str | None] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="udp-peer", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            with self._lock:
                self.received.append(text)
            answer = self.answer
            reply = answer(text) if answer is not None else None
            if reply is not None:
                self.sock.sendto(reply.encode(), addr)

    def request(self, method: str, ruri: str, to: str, proxy_port: int, call_id: str | None = None) -> str:
        """Send ``method`` to the proxy on ``proxy_port``; returns its Call-ID."""
        call_id = call_id or uuid.uuid4().hex
        text = (f"{method} {ruri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
                f"From: <sip:alice@elsewhere.test>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:alice@{HOST}:{self.port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        self.sock.sendto(text.encode(), (HOST, proxy_port))
        return call_id

    def messages(self, call_id: str) -> list[str]:
        with self._lock:
            return [m for m in self.received if f"Call-ID: {call_id}" in m or f"call-id: {call_id}" in m.lower()]

    def statuses(self, call_id: str) -> list[int]:
        return [int(m.split(" ", 2)[1]) for m in self.messages(call_id) if m.startswith("SIP/2.0 ")]

    def count(self, predicate: Callable[[str], bool]) -> int:
        with self._lock:
            return sum(1 for m in self.received if predicate(m))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> "UdpPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
