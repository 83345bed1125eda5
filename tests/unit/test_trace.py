"""SIP trace, the sans-I/O parts: HEP v3 chunk layout, the pcap writer, the
ladder, and which messages the tracer captures (docs/trace.md)."""
from __future__ import annotations

import io
import struct

import pytest

from proxy.contract.trace import TraceRecord
from proxy.trace import hep, ladder, pcap
from proxy.trace.capture import Tracer, call_id_of, record, sampled

INVITE = (b"INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1\r\n"
          b"From: <sip:alice@example.test>;tag=a\r\nTo: <sip:bob@example.test>\r\ni: call-7@host\r\n"
          b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
OK = b"SIP/2.0 200 OK\r\nCall-ID: call-7@host\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"


def test_hep_v3_chunks_follow_the_layout():
    packet = hep.encode(INVITE, src=("192.0.2.1", 5062), dst=("198.51.100.2", 5060), transport="udp",
                        ts_us=1_765_000_000_123_456, capture_id=2001, password="s3cret",
                        correlation_id="call-7@host")
    assert packet[:4] == b"HEP3" and struct.unpack("!H", packet[4:6])[0] == len(packet)
    # first chunk by hand: vendor 0, type 1 (IP family), length 7, AF_INET = 2
    assert packet[6:13] == b"\x00\x00\x00\x01\x00\x07\x02"
    chunks = hep.decode(packet)
    assert chunks[hep.IP_PROTO] == b"\x11"
    assert chunks[hep.IPV4_SRC] == bytes([192, 0, 2, 1]) and chunks[hep.IPV4_DST] == bytes([198, 51, 100, 2])
    assert struct.unpack("!H", chunks[hep.SRC_PORT])[0] == 5062
    assert struct.unpack("!H", chunks[hep.DST_PORT])[0] == 5060
    assert struct.unpack("!I", chunks[hep.TIME_SEC])[0] == 1_765_000_000
    assert struct.unpack("!I", chunks[hep.TIME_USEC])[0] == 123_456
    assert chunks[hep.PROTO_TYPE] == b"\x01"
    assert struct.unpack("!I", chunks[hep.CAPTURE_ID])[0] == 2001
    assert chunks[hep.AUTH_KEY] == b"s3cret" and chunks[hep.CORRELATION_ID] == b"call-7@host"
    assert chunks[hep.PAYLOAD] == INVITE


def test_hep_ipv6_tcp_and_limits():
    chunks = hep.decode(hep.encode(OK, src=("2001:db8::1", 5060), dst=("2001:db8::2", 5061), transport="tcp",
                                   ts_us=0, capture_id=1))
    assert chunks[hep.IP_FAMILY] == b"\x0a" and chunks[hep.IP_PROTO] == b"\x06"
    assert len(chunks[hep.IPV6_SRC]) == 16 and hep.AUTH_KEY not in chunks
    with pytest.raises(hep.HepTooLarge):
        hep.encode(b"x" * 65535, src=("127.0.0.1", 1), dst=("127.0.0.1", 2), transport="udp", ts_us=0,
                   capture_id=1)
    with pytest.raises(ValueError):
        hep.encode(OK, src=("127.0.0.1", 1), dst=("::1", 2), transport="udp", ts_us=0, capture_id=1)


def test_pcap_frames_carry_the_messages_with_valid_checksums():
    out = io.BytesIO()
    n = pcap.write(out, [(1_765_000_000_000_001, INVITE, ("192.0.2.1", 5062), ("198.51.100.2", 5060)),
                         (1_765_000_000_500_000, OK, ("::1", 5060), ("::2", 5062))])
    data = out.getvalue()
    assert n == 2 and pcap.linktype(data) == pcap.LINKTYPE_RAW
    (t1, f1), (t2, f2) = pcap.read(data)
    assert (t1, t2) == (1_765_000_000_000_001, 1_765_000_000_500_000)
    assert f1[0] >> 4 == 4 and f1[9] == 17 and f1[28:] == INVITE
    assert pcap._checksum(f1[:20]) == 0                                   # IPv4 header checksum
    assert struct.unpack("!HH", f1[20:24]) == (5062, 5060)
    pseudo = f1[12:20] + struct.pack("!BBH", 0, 17, len(f1) - 20)
    assert pcap._checksum(pseudo + f1[20:]) == 0                          # UDP checksum
    assert f2[0] >> 4 == 6 and f2[6] == 17 and f2[48:] == OK
    mixed = pcap.udp_frame(OK, ("sip.example.test", 5060), ("::1", 5062))   # a name, and two versions
    assert mixed[0] >> 4 == 6 and mixed[8:24] == bytes(10) + b"\xff\xff" + bytes(4) and mixed[48:] == OK


def _rec(i, ts, src, dst, method="", status=0):
    return TraceRecord(id=str(i), ts_ms=ts, direction="in", transport="udp", src_ip=src[0], src_port=src[1],
                       dst_ip=dst[0], dst_port=dst[1], call_id="c", cseq=f"1 {method or 'INVITE'}",
                       method=method, status=status)


def test_ladder_draws_arrows_between_parties_in_time_order():
    a, p, b = ("10.0.0.1", 5062), ("10.0.0.2", 5060), ("10.0.0.3", 5064)
    lines = ladder.render([_rec(3, 2_000, b, p, status=200), _rec(1, 1_000, a, p, "INVITE"),
                           _rec(2, 1_001, p, b, "INVITE"), _rec(4, 2_001, p, a, status=200)])
    assert lines[0].split() == ["10.0.0.1:5062", "10.0.0.2:5060", "10.0.0.3:5064"]
    assert [line[:12] for line in lines[1:]] == ["00:00:01.000", "00:00:01.001", "00:00:02.000", "00:00:02.001"]
    first, second, third, fourth = lines[1:]
    assert "INVITE" in first and ">|" in first and first.count("|") == 3
    col = 14 + ladder.COLUMN                     # the proxy's column
    assert first[14] == "|" and first[col] == "|" and second[col] == "|" and second.rstrip().endswith(">|")
    assert "<" in third and "200 INVITE" in third and third.index("<") == col + 1
    assert "<" in fourth and fourth.index("<") == 15


def test_tracer_all_sampled_and_flagged():
    got = []
    now = [0.0]
    tracer = Tracer(enabled=False, sample=1.0, emit=lambda *a: got.append(a), now=lambda: now[0],
                    flag_seconds=10, max_flagged=2)
    udp = ("udp", "192.0.2.1", 5062), ("udp", "127.0.0.1", 5060)
    assert not tracer.on
    tracer.capture_flagged(INVITE, *udp)                          # ctx.trace(): this INVITE, then the call
    assert tracer.on and [g[4] for g in got] == ["call-7@host"]
    tracer.capture(OK, "out", *udp)
    tracer.capture(OK.replace(b"call-7", b"other"), "out", *udp)  # another call: not captured
    assert len(got) == 2 and got[1][1] == "out"
    now[0] = 11                                                   # the flag expired
    tracer.capture(OK, "out", *udp)
    assert len(got) == 2 and not tracer.on
    for i in range(5):                                            # bounded
        tracer.flag(f"c{i}")
    assert list(tracer.flagged) == ["c3", "c4"]
    ids = [f"call-{i}" for i in range(2000)]
    share = sum(sampled(c, 0.25) for c in ids) / len(ids)
    assert 0.2 < share < 0.3 and all(sampled(c, 1.0) for c in ids) and not any(sampled(c, 0.0) for c in ids)
    everything = Tracer(enabled=True, sample=1.0, emit=lambda *a: got.append(a), now=lambda: 0.0)
    everything.capture(b"\r\n\r\n", "in", *udp)                   # keep-alive: never a record
    everything.capture(INVITE, "in", *udp)
    assert len(got) == 3


def test_record_fields():
    r = record(INVITE, "in", ("udp", "192.0.2.1", 5062), ("udp", "127.0.0.1", 5060), call_id=call_id_of(INVITE),
               ts_ms=5, rid="n-0-1", node="n", worker=0)
    assert (r.method, r.status, r.cseq, r.call_id, r.label) == ("INVITE", 0, "1 INVITE", "call-7@host", "INVITE")
    r = record(OK, "out", ("udp", "127.0.0.1", 5060), ("udp", "192.0.2.1", 5062), call_id="call-7@host",
               ts_ms=5, rid="n-0-2", node="n", worker=0)
    assert (r.method, r.status, r.label) == ("", 200, "200") and r.raw == OK.decode()


def test_every_trace_record_field_is_described_in_docs_events():
    import msgspec

    from tests.unit.test_contract_docs import DOC
    section = DOC.split("## Captured SIP messages (`sip.trace`)", 1)[1].split("\n## ", 1)[0]
    for field in msgspec.structs.fields(TraceRecord):
        assert f"`{field.name}`" in section, field.name


def test_the_edge_batches_captures_and_drops_when_the_outbox_is_behind(tmp_path, monkeypatch):
    import asyncio

    import msgspec

    import proxy.runtime.trace as edge_mod
    from proxy.contract.trace import TraceBatch
    from proxy.core.ports import Target
    from proxy.infra.config import load

    class NoKafka:                       # the publisher's side is tested with the outbox (test_publisher)
        def __init__(self, *args, **kwargs): pass
        def start(self): pass
        def wake(self): pass
        async def stop(self, drain_timeout): return 0
    monkeypatch.setattr(edge_mod, "EventPublisher", NoKafka)
    cfg = load(None)

    async def run(max_batches: int):
        trace = msgspec.structs.replace(cfg.trace, enabled=True, max_pending_batches=max_batches,
                                        hep=("udp:127.0.0.1:9",))
        edge = edge_mod.TraceEdge(msgspec.structs.replace(cfg, trace=trace), tmp_path / str(max_batches), 0,
                                  ("127.0.0.1", 5060))
        for _ in range(edge_mod.BATCH_RECORDS + 1):
            edge.received(INVITE, Target("udp", "192.0.2.1", 5062))
        edge.sent(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n" + b"x" * 70_000, Target("udp", "192.0.2.1", 5062))
        edge._flush()
        rows = edge.outbox.pending(100)
        stats = edge.stats
        await edge.close()
        return rows, stats

    rows, stats = asyncio.run(run(10))
    batches = [msgspec.json.decode(value, type=TraceBatch) for _seq, _key, value in rows]
    sizes = [len(b.records) for b in batches]
    assert sum(sizes) == edge_mod.BATCH_RECORDS + 2 and len(sizes) > 1     # cut by count or bytes, none lost
    assert all(len(value) < edge_mod.BATCH_BYTES + len(INVITE) * 2 for _s, _k, value in rows[:-1])
    assert batches[-1].records[-1].status == 200                            # in capture order
    assert batches[0].records[0].call_id == "call-7@host" and batches[0].records[0].direction == "in"
    assert stats.captured == edge_mod.BATCH_RECORDS + 2 and stats.dropped == 0
    assert stats.hep_sent == edge_mod.BATCH_RECORDS + 1 and stats.hep_dropped == 1   # too large for HEP
    rows, stats = asyncio.run(run(0))                                               # the outbox is "behind"
    assert rows == [] and stats.dropped == stats.captured == edge_mod.BATCH_RECORDS + 2
