"""A small pcap writer (libpcap classic format, LINKTYPE_RAW): each captured
SIP message becomes one synthesized IPv4/IPv6 + UDP frame, so Wireshark,
sngrep and tshark show the call (TCP messages too: one message, one frame)."""
from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import BinaryIO

MAGIC = 0xA1B2C3D4
LINKTYPE_RAW = 101           # the frame starts at the IP header
SNAPLEN = 65535
GLOBAL = struct.Struct("<IHHiIII")
RECORD = struct.Struct("<IIII")
MAX_UDP_PAYLOAD = 65535 - 20 - 8


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _addresses(src: str, dst: str) -> tuple[IPAddress, IPAddress]:
    """Both as IP addresses of one version: a name becomes 0.0.0.0, and an IPv4
    address next to an IPv6 one its IPv4-mapped form (a frame has one version)."""
    def parse(text: str) -> IPAddress:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return ipaddress.IPv4Address(0)
    s, d = parse(src), parse(dst)
    if s.version != d.version:
        s, d = (ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a for a in (s, d))
    return s, d


def udp_frame(payload: bytes, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """An IP + UDP frame carrying ``payload`` (truncated to fit one datagram)."""
    payload = payload[:MAX_UDP_PAYLOAD]
    s, d = _addresses(src[0], dst[0])
    udp_len = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, udp_len)
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", udp_len, 17)
    header = struct.pack("!HHHH", src[1], dst[1], udp_len, 0)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, _checksum(pseudo + header + payload) or 0xFFFF) + payload
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 64, s.packed, d.packed)
    return ip + udp


def write(out: BinaryIO, packets: Iterable[tuple[int, bytes, tuple[str, int], tuple[str, int]]]) -> int:
    """Write a pcap of (epoch µs, payload, src, dst); returns the frames written."""
    out.write(GLOBAL.pack(MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))
    n = 0
    for ts_us, payload, src, dst in packets:
        frame = udp_frame(payload, src, dst)
        out.write(RECORD.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame)) + frame)
        n += 1
    return n


def read(data: bytes) -> list[tuple[int, bytes]]:
    """(epoch µs, frame) of a classic pcap, either byte order (tests)."""
    magic = struct.unpack_from("<I", data)[0]
    order = "<" if magic in (MAGIC, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    at, frames = GLOBAL.size, []
    while at + RECORD.size <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(order + "IIII", data, at)
        at += RECORD.size
        frames.append((sec * 1_000_000 + (frac // 1000 if nano else frac), data[at:at + incl]))
        at += incl
    return frames


def linktype(data: bytes) -> int:
    magic = struct.unpack_from("<I", data)[0]
    order = "<" if magic in (MAGIC, 0xA1B23C4D) else ">"
    return struct.unpack_from(order + "I", data, 20)[0]
