"""baresip 1.0 against `sipledger up` with its default configuration.

Two real softphones register (digest, the proxy's default challenges), alice
calls bob (who answers by himself), a 440 Hz tone flows both ways as PCMU,
alice hangs up; the CDR carries alice's account.

Proof that RTP flowed both ways comes from the phones themselves: each reports
``CALL_RTPESTAB`` (its first RTP packet arrived) and, when the call closes,
the RTP packets sent and received in its RTCP reports.
"""
from __future__ import annotations

import re

import pytest

from proxy.contract.cdr import cdr_id_for
from tests.harness.calls import DOMAIN
from tests.harness.poll import eventually

pytestmark = [pytest.mark.interop]


def header(message: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(.+)$", message, re.M | re.I)
    assert m, f"no {name} in\n{message}"
    return m.group(1).strip()


def test_two_baresip_phones_register_call_with_rtp_both_ways_and_hang_up(sl, phones):
    alice = phones("alice")
    bob = phones("bob", auto_answer=True)
    alice.wait_registered()
    bob.wait_registered()

    alice.command("dial", f"sip:bob@{DOMAIN}")
    established = alice.wait_event("CALL_ESTABLISHED", 10)
    call_id = established["id"]
    bob.wait_event("CALL_ESTABLISHED", 10, call_id=call_id)
    # RTP arrived at both phones (each one's first received packet) ...
    alice.wait_event("CALL_RTPESTAB", 10, call_id=call_id)
    bob.wait_event("CALL_RTPESTAB", 10, call_id=call_id)

    # ... and kept flowing: both phones' RTCP reports count packets sent and received
    def both_ways(phone):
        def counted():
            counts = phone.rtp_counts(call_id)
            return counts if counts and counts[0] > 0 and counts[1] > 0 else None
        return counted

    eventually(both_ways(alice), "alice's RTCP report with RTP sent and received", 12, interval=0.1)
    eventually(both_ways(bob), "bob's RTCP report with RTP sent and received", 12, interval=0.1)

    alice.command("hangup")
    alice.wait_event("CALL_CLOSED", 10, call_id=call_id)
    bob.wait_event("CALL_CLOSED", 10, call_id=call_id)
    # the BYE reached bob through the proxy (its Via)
    byes = eventually(lambda: [m for m in bob.traced("BYE")
                               if m.split("\n", 1)[0].endswith(f"127.0.0.1:{bob.sip_port}")],
                      "the BYE in bob's SIP trace", 5)
    assert f"{sl.sip_addr[0]}:{sl.sip_addr[1]}" in header(byes[0], "Via")

    # the CDR: alice's INVITE (the authenticated one) identifies it
    invites = [m for m in alice.traced("INVITE") if m.startswith(f"UDP 127.0.0.1:{alice.sip_port} ->")]
    assert invites, alice.log_text()[-3000:]
    from_tag = re.search(r";tag=([^;>\s]+)", header(invites[-1], "From")).group(1)
    cdr_id = cdr_id_for(call_id, from_tag)

    def written():
        response = sl.client.get(f"/v1/cdrs/{cdr_id}")
        assert response.status_code in (200, 404), response.text
        return response.json() if response.status_code == 200 else None

    cdr = eventually(written, f"the CDR {cdr_id} of the baresip call", 20, interval=0.3)
    call = cdr.get("call", cdr)
    assert call["call_id"] == call_id
    assert call["account"] == f"alice@{DOMAIN}"
    assert call["caller_uri"] == f"sip:alice@{DOMAIN}"
