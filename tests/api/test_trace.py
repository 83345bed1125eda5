"""``/v1/calls/{call_id}/trace`` over the sample calls: the ladder, the pcap, the
other-account rule, and the CDR detail's ``trace_url``."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from cdr.store.trace import TraceStore
from proxy.contract.trace import TraceRecord
from proxy.trace import pcap

pytestmark = pytest.mark.integration


def traced(env, name: str) -> tuple[str, list[TraceRecord]]:
    leg = env.calls[name][0]
    caller, proxy, callee = ("192.0.2.1", 5062), ("127.0.0.1", 5060), ("198.51.100.9", 5060)
    hops = [(caller, proxy, "INVITE", 0), (proxy, callee, "INVITE", 0), (callee, proxy, "", 200),
            (proxy, caller, "", 200)]
    records = [TraceRecord(id=f"{name}-{i}", ts_ms=leg.setup_ms + i, direction="in" if dst == proxy else "out",
                           transport="udp", src_ip=src[0], src_port=src[1], dst_ip=dst[0], dst_port=dst[1],
                           call_id=leg.call_id, cseq="1 INVITE", method=method, status=status,
                           raw=f"{method or 'SIP/2.0'} {status or 'sip:x'}\r\nCall-ID: {leg.call_id}\r\n\r\n")
               for i, (src, dst, method, status) in enumerate(hops)]
    TraceStore(env.state.cdr_store.backend).insert(records)
    return leg.call_id, records


def test_trace_ladder_pcap_and_account_rule(cdr_api):
    env = cdr_api
    call_id, records = traced(env, "c1")                  # alice's call
    path = f"/v1/calls/{quote(call_id, safe='')}/trace"
    body = env.get(path).json()
    assert [m["method"] or m["status"] for m in body["messages"]] == ["INVITE", "INVITE", 200, 200]
    assert body["messages"][0]["src"] == "192.0.2.1:5062" and len(body["ladder"]) == 5
    assert "INVITE" in body["ladder"][1] and "200 INVITE" in body["ladder"][4]
    assert env.get(path, "alice").status_code == 200
    hidden = env.get(path, "bob")
    assert hidden.status_code == 404 and env.get("/v1/calls/nobody@x/trace").status_code == 404
    raw = env.get(path, format="pcap")
    assert raw.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert [frame[28:] for _ts, frame in pcap.read(raw.content)] == [r.raw.encode() for r in records]
    assert env.get(f"/v1/cdrs/{env.calls['c1'][0].cdr_id}").json()["trace_url"] == path
    assert env.get(f"/v1/cdrs/{env.calls['c2'][0].cdr_id}").json()["trace_url"] is None
