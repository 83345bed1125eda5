"""Grammar-ish fuzzing of SIP: valid messages a phone or a peer sends, then
mutated the way broken and hostile senders mutate them (header names and
values replaced by odd text, lines dropped or repeated, bytes flipped, cut,
split, or blown up in size).  Used by tests/unit/test_fuzz.py (hypothesis)
and bench/fuzz_tracebacks.py (a seeded random generator, no hypothesis)."""
from __future__ import annotations

import random

SEEDS: list[bytes] = [s.replace("\n", "\r\n").encode() for s in (
    """INVITE sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKf1;rport
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>
Call-ID: fuzz-1
CSeq: 1 INVITE
Contact: <sip:alice@192.0.2.10:5060>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: 4

v=0
""",
    """REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKf2;rport
From: <sip:bob@example.test>;tag=r1
To: <sip:bob@example.test>
Call-ID: fuzz-reg
CSeq: 1 REGISTER
Contact: <sip:bob@192.0.2.20:5062>
Expires: 3600
Max-Forwards: 70
Content-Length: 0

""",
    """OPTIONS sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKf3
From: <sip:alice@example.test>;tag=o1
To: <sip:example.test>
Call-ID: fuzz-opt
CSeq: 7 OPTIONS
Max-Forwards: 70
Content-Length: 0

""",
    """CANCEL sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKf1;rport
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>
Call-ID: fuzz-1
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0

""",
    """ACK sip:bob@192.0.2.20:5062 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKf9;rport
Route: <sip:10.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: fuzz-1
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

""",
    """BYE sip:bob@192.0.2.20:5062 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKf8;rport
Route: <sip:10.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: fuzz-1
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

""",
    """SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKstray
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKf1;received=192.0.2.10;rport=5060
Record-Route: <sip:10.0.0.1:5060;lr>
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag=b1
Call-ID: fuzz-1
CSeq: 1 INVITE
Contact: <sip:bob@192.0.2.20:5062>
Content-Length: 0

""",
)]

HEADER_NAMES = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Route", "Record-Route",
                "Contact", "m", "Max-Forwards", "Content-Length", "l", "Proxy-Authorization",
                "Authorization", "Expires", "Reason", "User-Agent", "X-Odd", ""]

# values senders get wrong: odd ports and params, lists of nothing, quotes, controls
ODD_VALUES = [
    "", ",", " , ,", ";", "<", ">", '"', '"unterminated', "<sip:>", "<sip:a@>;tag=",
    "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx;rport=abc",
    "SIP/2.0/UDP 192.0.2.10:99999;branch=z9hG4bKx", "SIP/2.0/UDP [::1;branch=z9hG4bKx",
    "SIP/2.0/UDP h\x01st:5060;branch=z9hG4bKx", "SIP/2.0/UDP h\u00f6st.example;branch=z9hG4bKx",
    "SIP/2.0/UDP 192.0.2.10;received=evil.invalid;branch=z9hG4bKx",
    "SIP/2.0/UDP evil.invalid:5060;branch=z9hG4bKx", "SIP/2.0/UDP", "SIP/3.0/UDP x",
    "1 INVITE", "x INVITE", "99999999999 INVITE", "1", "-1", "4294967296", "1e3",
    "Digest username=\"alice\", nonce=\"made-up\", response=\"00\"", "Digest ,,,",
    "sip:bob@example.test", "tel:+", "sips:[::1]:0", "<sip:bob@example.test;lr>, ,",
    "\"Jos\xe9\" <sip:jose@example.test>;tag=1", "\x00\x7f", "\u202e\ufeff", "a" * 300,
]

ODD_BYTES = [b"\x00", b"\xff", b"\xe9", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b":", b";", b",",
             b"<", b">", b'"', b" ", b"\t", b"\xc3", b"\xed\xa0\x80"]


def mutate(rng: random.Random, data: bytes, rounds: int) -> bytes:
    """``rounds`` random mutations of one message."""
    for _ in range(rounds):
        data = MUTATIONS[rng.randrange(len(MUTATIONS))](rng, data)
    return data


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body if sep else b""


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _replace_value(rng, data):
    lines, body = _lines(data)
    if len(lines) > 1:
        i = rng.randrange(1, len(lines))
        name = lines[i].split(b":", 1)[0]
        lines[i] = name + b": " + rng.choice(ODD_VALUES).encode("utf-8", "surrogateescape")
    return _join(lines, body)


def _add_header(rng, data):
    lines, body = _lines(data)
    line = f"{rng.choice(HEADER_NAMES)}: {rng.choice(ODD_VALUES)}".encode()
    lines.insert(rng.randrange(1, len(lines) + 1), line)
    return _join(lines, body)


def _drop_line(rng, data):
    lines, body = _lines(data)
    if len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    return _join(lines, body)


def _repeat_line(rng, data):
    lines, body = _lines(data)
    i = rng.randrange(len(lines))
    lines[i:i] = [lines[i]] * rng.choice((1, 2, 50, 400))
    return _join(lines, body)


def _rename_header(rng, data):
    lines, body = _lines(data)
    if len(lines) > 1:
        i = rng.randrange(1, len(lines))
        value = lines[i].split(b":", 1)[-1]
        lines[i] = rng.choice(HEADER_NAMES).encode() + b":" + value
    return _join(lines, body)


def _flip_byte(rng, data):
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + rng.choice(ODD_BYTES) + data[i + 1:]


def _insert_bytes(rng, data):
    i = rng.randrange(len(data) + 1)
    return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))) + data[i:]


def _truncate(rng, data):
    return data[:rng.randrange(len(data) + 1)]


def _blow_up(rng, data):
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.choice((b"a", b";x=y", b",", b"\xe9")) * rng.choice((100, 5000, 20000)) + data[i:]


def _start_line(rng, data):
    lines, body = _lines(data)
    lines[0] = rng.choice([b"INVITE sip:bob@example.test SIP/2.0", b"SIP/2.0 180 Ringing",
                           b"SIP/2.0 487 Request Terminated", b"SIP/2.0 999 x", b"FOO bar SIP/2.0",
                           b"INVITE  SIP/2.0", b"SIP/2.0 200", b"CANCEL sip:bob@example.test SIP/2.0",
                           b"ACK sip:x SIP/2.0", b"INVITE sip:\xe9@example.test SIP/2.0"])
    return _join(lines, body)


MUTATIONS = [_replace_value, _add_header, _drop_line, _repeat_line, _rename_header, _flip_byte,
             _insert_bytes, _truncate, _blow_up, _start_line]


def fuzzed(rng: random.Random) -> bytes:
    """One fuzzed message: a seed with 1–4 mutations."""
    return mutate(rng, rng.choice(SEEDS), rng.randrange(1, 5))
