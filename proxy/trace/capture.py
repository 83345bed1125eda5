"""What to capture (siptrace): every message, a sample of calls, or the calls
a routing script flagged (``ctx.trace()``), and the record of one message.

Sans-I/O: the worker edge calls ``received`` / ``sent`` with the bytes and the
addresses, only while ``on`` is true (all traffic, or some call flagged) — one
attribute check per message when trace is off.  Records go to ``emit``.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Callable

from ..contract.trace import TraceRecord

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_CSEQ = re.compile(rb"\r\n(?:cseq)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_MAX_ID = 256                # a Call-ID longer than this is cut (it only names the call)

Address = tuple[str, str, int]     # transport, ip, port


def call_id_of(data: bytes) -> str:
    m = _CALL_ID.search(data)
    return m.group(1).strip()[:_MAX_ID].decode("utf-8", "replace") if m else ""


def sampled(call_id: str, sample: float) -> bool:
    """The same answer for every message of a call (a hash of its Call-ID)."""
    if sample >= 1.0:
        return True
    return zlib.crc32(call_id.encode()) < sample * 0x1_0000_0000


def record(data: bytes, direction: str, src: Address, dst: Address, *, call_id: str, ts_ms: int,
           rid: str, node: str, worker: int) -> TraceRecord:
    first = data.split(b"\r\n", 1)[0]
    method, status = "", 0
    if first.startswith(b"SIP/2.0 "):
        code = first[8:11]
        status = int(code) if code.isdigit() else 0
    else:
        method = first.split(b" ", 1)[0][:32].decode("ascii", "replace")
    m = _CSEQ.search(data)
    cseq = m.group(1).strip()[:64].decode("ascii", "replace") if m else ""
    return TraceRecord(id=rid, ts_ms=ts_ms, direction=direction,  # type: ignore[arg-type]
                       transport=src[0], src_ip=src[1], src_port=src[2], dst_ip=dst[1], dst_port=dst[2],
                       call_id=call_id, cseq=cseq, method=method, status=status, node=node, worker=worker,
                       raw=data.decode("utf-8", "replace"))


class Tracer:
    """Per worker.  ``flag(call_id)`` makes a call's later messages captured
    too, for ``flag_seconds`` (bounded: ``max_flagged`` calls, oldest forgotten)."""

    def __init__(self, *, enabled: bool, sample: float, emit: Callable[[bytes, str, Address, Address, str], None],
                 now: Callable[[], float], flag_seconds: float = 4 * 3600.0, max_flagged: int = 10_000):
        self.all = enabled
        self.sample = sample
        self.emit = emit                    # (data, direction, src, dst, call_id)
        self.now = now
        self.flag_seconds = flag_seconds
        self.max_flagged = max_flagged
        self.flagged: dict[str, float] = {}     # Call-ID → forgotten after (monotonic)
        self.on = enabled

    def flag(self, call_id: str) -> None:
        if not call_id:
            return
        flagged = self.flagged
        flagged.pop(call_id, None)
        now = self.now()
        flagged[call_id] = now + self.flag_seconds
        while len(flagged) > self.max_flagged or next(iter(flagged.values())) < now:
            del flagged[next(iter(flagged))]       # insertion order = oldest first
        self.on = True

    def wanted(self, call_id: str) -> bool:
        if self.all and sampled(call_id, self.sample):
            return True
        until = self.flagged.get(call_id)
        if until is None:
            return False
        if until < self.now():
            del self.flagged[call_id]
            self.on = self.all or bool(self.flagged)
            return False
        return True

    def capture(self, data: bytes, direction: str, src: Address, dst: Address) -> None:
        if not data.strip(b"\r\n"):
            return                           # keep-alive CRLFs
        call_id = call_id_of(data)
        if self.wanted(call_id):
            self.emit(data, direction, src, dst, call_id)

    def capture_flagged(self, data: bytes, src: Address, dst: Address) -> None:
        """``ctx.trace()`` on the message being handled: flag its call and
        capture the message itself (it was received before the flag existed)."""
        call_id = call_id_of(data)
        already = self.wanted(call_id)
        self.flag(call_id)
        if not already:
            self.emit(data, "in", src, dst, call_id)
