"""Bencode, strict and bounded: the wire format of rtpengine's ng protocol.

Ours rather than a PyPI package: ``fastbencode`` (maintained) and the older
``bencode.py``/``bencodepy`` decode without a size or nesting bound (a deep
``llll…`` from a forged datagram meets Python's recursion limit), accept
only bytes, and pull in a native extension we do not need for datagrams
under 64 KiB.  The format is four productions; 100 lines with the bounds
built in are cheaper than wrapping a library to add them.

    encode({"command": "ping"})         -> b"d7:command4:pinge"
    decode(b"d6:result4:ponge")         -> {"result": "pong"}

Strings decode to ``str`` (UTF-8, undecodable bytes kept as surrogates so a
round trip is lossless), or to ``bytes`` with ``text=False``.  Dictionary
keys must be strings and unique; their order is not enforced on input
(rtpengine writes them in insertion order) and is sorted on output, as the
format asks.  Anything else (leading zeros, ``-0``, trailing bytes, a length
past the end, too deep, too long) raises ``BencodeError``.
"""
from __future__ import annotations

from typing import TypeAlias

__all__ = ["MAX_DEPTH", "MAX_INPUT", "BencodeError", "Value", "decode", "encode"]

Value: TypeAlias = int | str | bytes | list["Value"] | dict[str, "Value"]

MAX_INPUT = 65536       # one UDP datagram at most
MAX_DEPTH = 32          # rtpengine's deepest reply (query statistics) nests about 8 levels
_MAX_INT_DIGITS = 20    # 64-bit counters and a sign


class BencodeError(ValueError):
    """Malformed, oversized or too deeply nested bencode; the message says where."""


def encode(value: Value, max_depth: int = MAX_DEPTH) -> bytes:
    out: list[bytes] = []
    _encode(value, out, max_depth)
    return b"".join(out)


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if depth < 0:
        raise BencodeError("value nested too deeply to encode")
    if isinstance(value, bool):     # a bool is an int to Python, never to the peer
        raise BencodeError("bool has no bencode form; send an int or a flag string")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        _encode_bytes(value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, (bytes, bytearray)):
        _encode_bytes(bytes(value), out)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth - 1)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        keys = {}
        for key in value:
            if not isinstance(key, (str, bytes)):
                raise BencodeError(f"dictionary key {key!r} is not a string")
            keys[key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key] = key
        for raw in sorted(keys):
            _encode_bytes(raw, out)
            _encode(value[keys[raw]], out, depth - 1)
        out.append(b"e")
    else:
        raise BencodeError(f"{type(value).__name__} has no bencode form")


def _encode_bytes(raw: bytes, out: list[bytes]) -> None:
    out.append(b"%d:" % len(raw))
    out.append(raw)


def decode(data: bytes, *, text: bool = True, max_input: int = MAX_INPUT, max_depth: int = MAX_DEPTH) -> Value:
    """The one value ``data`` holds; ``BencodeError`` unless it is exactly one well-formed value."""
    if len(data) > max_input:
        raise BencodeError(f"input of {len(data)} bytes exceeds {max_input}")
    value, end = _Decoder(bytes(data), text, max_depth).value(0, 0)
    if end != len(data):
        raise BencodeError(f"trailing bytes at offset {end}")
    return value


class _Decoder:
    def __init__(self, data: bytes, text: bool, max_depth: int) -> None:
        self.data, self.text, self.max_depth = data, text, max_depth

    def value(self, pos: int, depth: int) -> tuple[Value, int]:
        data = self.data
        if pos >= len(data):
            raise BencodeError(f"input ends at offset {pos} where a value was expected")
        lead = data[pos:pos + 1]
        if lead == b"i":
            return self.integer(pos + 1)
        if lead.isdigit():
            raw, end = self.string(pos)
            return (raw.decode("utf-8", "surrogateescape") if self.text else raw), end
        if lead in (b"l", b"d"):
            if depth >= self.max_depth:
                raise BencodeError(f"nesting deeper than {self.max_depth} at offset {pos}")
            return (self.items if lead == b"l" else self.mapping)(pos + 1, depth + 1)
        raise BencodeError(f"unexpected byte {lead!r} at offset {pos}")

    def integer(self, pos: int) -> tuple[int, int]:
        end = self.data.find(b"e", pos, pos + _MAX_INT_DIGITS + 1)
        if end < 0:
            raise BencodeError(f"integer at offset {pos} not terminated within {_MAX_INT_DIGITS} digits")
        digits = self.data[pos:end]
        body = digits[1:] if digits.startswith(b"-") else digits
        if not body.isdigit() or not body.isascii() or (body.startswith(b"0") and digits != b"0"):
            raise BencodeError(f"malformed integer {digits!r} at offset {pos}")
        return int(digits), end + 1

    def string(self, pos: int) -> tuple[bytes, int]:
        colon = self.data.find(b":", pos, pos + 8)     # lengths over 9,999,999 cannot fit the input anyway
        if colon < 0:
            raise BencodeError(f"string length at offset {pos} not terminated by ':'")
        digits = self.data[pos:colon]
        if not digits.isdigit() or not digits.isascii() or (digits.startswith(b"0") and digits != b"0"):
            raise BencodeError(f"malformed string length {digits!r} at offset {pos}")
        start, length = colon + 1, int(digits)
        if start + length > len(self.data):
            raise BencodeError(f"string of {length} bytes at offset {pos} runs past the end")
        return self.data[start:start + length], start + length

    def items(self, pos: int, depth: int) -> tuple[list[Value], int]:
        result: list[Value] = []
        while self.data[pos:pos + 1] != b"e":
            item, pos = self.value(pos, depth)
            result.append(item)
        return result, pos + 1

    def mapping(self, pos: int, depth: int) -> tuple[dict[str, Value], int]:
        result: dict[str, Value] = {}
        while self.data[pos:pos + 1] != b"e":
            if not self.data[pos:pos + 1].isdigit():
                raise BencodeError(f"dictionary key at offset {pos} is not a string")
            raw, pos = self.string(pos)
            key = raw.decode("utf-8", "surrogateescape")
            if key in result:
                raise BencodeError(f"duplicate dictionary key {key!r}")
            result[key], pos = self.value(pos, depth)
        return result, pos + 1
