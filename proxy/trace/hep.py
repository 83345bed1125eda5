"""HEP v3 (EEP, Homer Encapsulation Protocol) encoder, as Kamailio's and
OpenSIPS' siptrace send it to HOMER.  Sans-I/O: bytes in, bytes out.

A packet is "HEP3", its total length (uint16, header included), then chunks:
vendor id (uint16, 0 = generic), type id (uint16), chunk length (uint16, its
6-byte header included), value.  All integers are network byte order.
"""
from __future__ import annotations

import functools
import socket
import struct

MAGIC = b"HEP3"
HEADER = struct.Struct("!4sH")
CHUNK = struct.Struct("!HHH")

# generic chunk types (vendor 0)
IP_FAMILY, IP_PROTO = 0x01, 0x02
IPV4_SRC, IPV4_DST, IPV6_SRC, IPV6_DST = 0x03, 0x04, 0x05, 0x06
SRC_PORT, DST_PORT = 0x07, 0x08
TIME_SEC, TIME_USEC = 0x09, 0x0A
PROTO_TYPE, CAPTURE_ID = 0x0B, 0x0C
AUTH_KEY, PAYLOAD, CORRELATION_ID = 0x0E, 0x0F, 0x11

AF_INET, AF_INET6 = 2, 10
PROTO_UDP, PROTO_TCP = 17, 6
TYPE_SIP = 1
MAX_PACKET = 65535           # the total length is a uint16


class HepTooLarge(ValueError):
    """The message does not fit one HEP packet (uint16 total length)."""


def _chunk(kind: int, value: bytes) -> bytes:
    if len(value) > MAX_PACKET - CHUNK.size:
        raise HepTooLarge(f"HEP chunk of {len(value)} bytes")
    return CHUNK.pack(0, kind, CHUNK.size + len(value)) + value


@functools.lru_cache(maxsize=4096)
def _packed(ip: str) -> bytes:
    """4 or 16 bytes (inet_pton: no resolver; a few addresses recur, hence the cache)."""
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        try:
            return socket.inet_pton(socket.AF_INET6, ip)
        except OSError:
            raise ValueError(f"not an IP address: {ip[:60]!r}") from None


def encode(payload: bytes, *, src: tuple[str, int], dst: tuple[str, int], transport: str,
           ts_us: int, capture_id: int, password: str = "", correlation_id: str = "") -> bytes:
    """One SIP message as a HEP v3 packet.  ``ts_us``: UTC epoch microseconds."""
    src_ip, dst_ip = _packed(src[0]), _packed(dst[0])
    if len(src_ip) != len(dst_ip):
        raise ValueError("source and destination of different IP versions")
    v4 = len(src_ip) == 4
    chunks = [
        _chunk(IP_FAMILY, bytes([AF_INET if v4 else AF_INET6])),
        _chunk(IP_PROTO, bytes([PROTO_TCP if transport == "tcp" else PROTO_UDP])),
        _chunk(IPV4_SRC if v4 else IPV6_SRC, src_ip),
        _chunk(IPV4_DST if v4 else IPV6_DST, dst_ip),
        _chunk(SRC_PORT, struct.pack("!H", src[1])),
        _chunk(DST_PORT, struct.pack("!H", dst[1])),
        _chunk(TIME_SEC, struct.pack("!I", ts_us // 1_000_000)),
        _chunk(TIME_USEC, struct.pack("!I", ts_us % 1_000_000)),
        _chunk(PROTO_TYPE, bytes([TYPE_SIP])),
        _chunk(CAPTURE_ID, struct.pack("!I", capture_id & 0xFFFFFFFF)),
    ]
    if password:
        chunks.append(_chunk(AUTH_KEY, password.encode()))
    chunks.append(_chunk(PAYLOAD, payload))
    if correlation_id:
        chunks.append(_chunk(CORRELATION_ID, correlation_id.encode()))
    body = b"".join(chunks)
    total = HEADER.size + len(body)
    if total > MAX_PACKET:
        raise HepTooLarge(f"HEP packet of {total} bytes")
    return HEADER.pack(MAGIC, total) + body


def decode(packet: bytes) -> dict[int, bytes]:
    """Chunk type → value of a HEP v3 packet (tests and diagnostics)."""
    magic, total = HEADER.unpack_from(packet)
    if magic != MAGIC or total != len(packet):
        raise ValueError("not a HEP v3 packet")
    chunks: dict[int, bytes] = {}
    at = HEADER.size
    while at < total:
        _vendor, kind, length = CHUNK.unpack_from(packet, at)
        if length < CHUNK.size or at + length > total:
            raise ValueError("bad chunk length")
        chunks[kind] = packet[at + CHUNK.size:at + length]
        at += length
    return chunks
