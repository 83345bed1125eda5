"""Framing SIP over a byte stream (TCP, RFC 3261 §18.3): Content-Length delimits bodies."""
from __future__ import annotations

MAX_MESSAGE = 65536


class FramingError(ValueError):
    pass


class StreamFramer:
    """Feed bytes, get complete messages.  Keep-alive CRLFs between messages are skipped."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while True:
            start = 0
            while start < len(buf) and buf[start] in (13, 10):
                start += 1
            if start:
                del buf[:start]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_MESSAGE:
                    raise FramingError("header section too large")
                return out
            length = _content_length(bytes(buf[:end]))
            total = end + 4 + length
            if total > MAX_MESSAGE:
                raise FramingError("message too large")
            if len(buf) < total:
                return out
            out.append(bytes(buf[:total]))
            del buf[:total]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key in (b"content-length", b"l"):
            value = value.strip()
            if not (value.isascii() and value.isdigit()):
                raise FramingError("malformed Content-Length")
            return int(value)
    # §18.3: Content-Length is mandatory on streams; none means no body
    return 0
