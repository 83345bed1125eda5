"""Two proxy instances on one location store (proxy/core/peering.py, docs/scale-out.md):
a NATed phone registered on A is reached from B through A's pinhole, and only so."""
from __future__ import annotations

from proxy.core.peering import Peering
from proxy.core.ports import Target
from proxy.core.registrar import Registrar
from proxy.sip.message import parse
from proxy.sip.uri import parse_name_addr, parse_uri
from tests.harness.corefake import invite, response_to, subscriber_rig

SECRET = b"the cluster's [auth] secret"
NAT = Target("udp", "203.0.113.9", 40000)          # bob's NAT, as A sees his REGISTER
A_HOST, B_HOST = "10.0.0.1", "10.0.0.2"
FROM_B = Target("udp", B_HOST, 5060)
FROM_A = Target("udp", A_HOST, 5060)


def instance(tmp_path, name, host, trusted, secret=SECRET):
    (tmp_path / name).mkdir()
    rig = subscriber_rig(tmp_path / name, auth=False, host=host, location=str(tmp_path / "location.sqlite"),
                         trusted_sources=(f"{trusted}/32",))
    rig.core.peering = Peering(secret, rig.core.node)
    rig.core.registrar = Registrar(rig.location, instance_route=rig.core.peering.instance_route)
    return rig


def register_behind_nat(rig):
    out = rig.receive("""REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bKreg1;rport
From: <sip:bob@example.test>;tag=r1
To: <sip:bob@example.test>
Call-ID: reg-bob
CSeq: 1 REGISTER
Contact: <sip:bob@192.168.1.20:5062>
Expires: 3600
Max-Forwards: 70
Content-Length: 0

""", NAT)
    assert [m.status for m, _ in out] == [200]


def wire(msg) -> str:
    return msg.serialize().decode().replace("\r\n", "\n")


def test_a_natted_binding_of_a_is_reached_from_b_through_a(tmp_path):
    a = instance(tmp_path, "a", A_HOST, trusted=B_HOST)
    b = instance(tmp_path, "b", B_HOST, trusted=A_HOST)
    register_behind_nat(a)
    (binding,) = a.location.lookup("bob@example.test", 0)
    assert binding.nat and binding.instance.startswith(f"<sip:{A_HOST}:5060;lr;sl-flow=")

    # B routes the call to A, with A's Route, the phone's Contact as the Request-URI
    out = b.receive(invite(), Target("udp", "192.0.2.10", 5060))
    (to_a, hop), = [(m, t) for m, t in out if m.method == "INVITE"]
    assert (hop.host, hop.port) == (A_HOST, 5060)
    assert to_a.uri == "sip:bob@192.168.1.20:5062" and to_a.values("route") == [binding.instance]
    b_events = len(b.effects.events)

    # A pops its Route and relays over the pinhole, untracked, Record-Routing with the flow
    out = a.receive(wire(to_a), FROM_B)
    (to_bob, hop), = [(m, t) for m, t in out if m.method == "INVITE"]
    assert (hop.host, hop.port) == (NAT.host, NAT.port) and not to_bob.has("route")
    top_rr = parse_uri(parse_name_addr(to_bob.values("record-route")[0]).uri)
    assert top_rr.host == A_HOST and "sl-flow" in top_rr.params
    assert a.effects.events == []                  # B bills the call, A only relays

    # bob answers: up through A to B, and B's dialog exists
    ok = a.receive(response_to(to_bob, 200, "OK"), NAT)
    (up, _), = [(m, t) for m, t in ok if m.status == 200]
    out = b.receive(wire(up), FROM_A)
    assert any(m.status == 200 for m, _ in out) and len(b.effects.events) > b_events

    # alice's BYE follows the route set: B, then A, which sends it to the pinhole
    routes = list(reversed(up.values("record-route")))
    bye = parse(wire(to_bob).encode())
    bye_text = ("BYE sip:bob@192.168.1.20:5062 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye;rport\n"
                + "".join(f"Route: {r}\n" for r in routes)
                + f"From: {bye.get('from')}\nTo: {bye.get('to')};tag=b1\nCall-ID: {bye.call_id}\n"
                  "CSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n")
    out = b.receive(bye_text, Target("udp", "192.0.2.10", 5060))
    (to_a, hop), = [(m, t) for m, t in out if m.method == "BYE"]
    assert (hop.host, hop.port) == (A_HOST, 5060)
    out = a.receive(wire(to_a), FROM_B)
    (to_bob, hop), = [(m, t) for m, t in out if m.method == "BYE"]
    assert (hop.host, hop.port) == (NAT.host, NAT.port)


def test_the_flow_is_honoured_only_from_a_trusted_peer_and_only_sealed_by_our_secret(tmp_path):
    a = instance(tmp_path, "a", A_HOST, trusted=B_HOST)
    b = instance(tmp_path, "b", B_HOST, trusted=A_HOST)
    register_behind_nat(a)
    out = b.receive(invite(), Target("udp", "192.0.2.10", 5060))
    (to_a, _), = [(m, t) for m, t in out if m.method == "INVITE"]
    # an outsider replaying the Route: the script runs, and a stranger may not leave
    stranger = a.receive(wire(to_a).replace("Via: SIP/2.0/UDP 10.0.0.2", "Via: SIP/2.0/UDP 198.51.100.7"),
                         Target("udp", "198.51.100.7", 5060))
    assert not any((t.host, t.port) == (NAT.host, NAT.port) for _, t in stranger)
    # a token another secret sealed (or edited) is not a flow either
    other = instance(tmp_path, "c", "10.0.0.3", trusted=B_HOST, secret=b"another secret")
    forged = wire(to_a).replace(A_HOST + ":5060;lr", "10.0.0.3:5060;lr")
    relayed = other.receive(forged, FROM_B)
    assert not any((t.host, t.port) == (NAT.host, NAT.port) for _, t in relayed)


def test_plain_public_udp_bindings_are_reached_directly(tmp_path):
    a = instance(tmp_path, "a", A_HOST, trusted=B_HOST)
    b = instance(tmp_path, "b", B_HOST, trusted=A_HOST)
    from tests.harness.corefake import register
    register(a)                                    # bob on a public address: no NAT
    (binding,) = a.location.lookup("bob@example.test", 0)
    assert binding.instance is None
    out = b.receive(invite(), Target("udp", "192.0.2.10", 5060))
    (to_bob, hop), = [(m, t) for m, t in out if m.method == "INVITE"]
    assert (hop.host, hop.port) == ("192.0.2.20", 5062) and not to_bob.has("route")


def test_flow_tokens_round_trip_and_refuse_tampering():
    from proxy.core.node import LocalNode
    peering = Peering(SECRET, LocalNode(A_HOST, {"udp": 5060}, 5060))
    token = peering.token("sip:203.0.113.9:40000;transport=tcp", 3)
    assert peering.open_token(token) == ("sip:203.0.113.9:40000;transport=tcp", 3)
    assert peering.open_token(peering.token("sip:203.0.113.9:40000", None)) == ("sip:203.0.113.9:40000", None)
    assert peering.open_token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert peering.open_token("x" * 500) is None and peering.open_token("!!") is None
    assert Peering(b"other", peering.node).open_token(token) is None


def test_only_the_owning_instance_keeps_a_natted_binding_alive(tmp_path):
    """B must not ping A's pinhole: its pings would leave from B, go unanswered
    and drop bob while he is fine."""
    from proxy.core.natping import NatKeepalive, NatPinger
    from proxy.infra import clock
    a = instance(tmp_path, "a", A_HOST, trusted=B_HOST)
    b = instance(tmp_path, "b", B_HOST, trusted=A_HOST)
    register_behind_nat(a)
    now = clock.time()
    for rig, expected in ((b, []), (a, [(NAT.host, NAT.port)])):
        keepalive = NatKeepalive(rig.core, rig.location, NatPinger(0, 1, interval=5, failures=2))
        sent = []
        for k in range(8):                   # 4 s: one ping per pass of 5 s
            keepalive.tick(now + k * 0.5)
            sent += [(t.host, t.port) for m, t in rig.effects.take() if m.method == "OPTIONS"]
        assert sent == expected


def test_an_in_dialog_request_for_a_dialog_b_does_not_hold(tmp_path):
    """The phones follow the route set: a dialog created through A names only A.
    A BYE for it sent to B anyway is not B's to route (404, nothing forwarded);
    one whose Route names B (B restarted and lost the dialog) goes on along the
    route set; a re-INVITE for a dialog B does not hold is refused (481)."""
    a = instance(tmp_path, "a", A_HOST, trusted=B_HOST)
    b = instance(tmp_path, "b", B_HOST, trusted=A_HOST)
    from tests.harness.corefake import register
    register(a)
    alice = Target("udp", "192.0.2.10", 5060)
    out = a.receive(invite(), alice)
    (to_bob, _), = [(m, t) for m, t in out if m.method == "INVITE"]
    (rr,) = to_bob.values("record-route")
    assert rr.startswith(f"<sip:{A_HOST}:")                  # the route set: A only

    def in_dialog(method, route, cseq):
        return (f"{method} sip:bob@192.0.2.20:5062 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}{cseq};rport\n"
                f"Route: {route}\nFrom: \"Alice\" <sip:alice@example.test>;tag=a1\nTo: <sip:bob@example.test>;tag=b1\n"
                f"Call-ID: call-1\nCSeq: {cseq} {method}\nMax-Forwards: 70\nContent-Length: 0\n\n")

    out = b.receive(in_dialog("BYE", rr, 2), alice)
    assert [(m.status, m.reason) for m, _ in out] == [(404, "Not Here")]
    out = b.receive(in_dialog("BYE", f"<sip:{B_HOST}:5060;lr>", 3), alice)
    (bye, hop), = [(m, t) for m, t in out if m.method == "BYE"]
    assert (hop.host, hop.port) == ("192.0.2.20", 5062)
    out = b.receive(in_dialog("INVITE", f"<sip:{B_HOST}:5060;lr>", 4), alice)
    assert [m.status for m, _ in out if m.status and m.status >= 200] == [481]


def test_config_checks_the_location_url():
    from proxy.infra import config
    base = {"registrar": {"location_url": "postgresql+psycopg://u@db/x"}, "proxy": {"listen": "192.0.2.11"}}
    assert all(ok for key, ok, _ in config.checks(config.Config(**_structs(base))) if key == "registrar.location_url")
    for bad in ({"registrar": {"location_url": "mysql://u@db/x"}},
                {"registrar": {"location_url": "postgresql+psycopg://u@db/x"}, "proxy": {"listen": "0.0.0.0"}}):
        assert not all(ok for key, ok, _ in config.checks(config.Config(**_structs(bad)))
                       if key == "registrar.location_url")


def _structs(sections: dict) -> dict:
    import msgspec

    from proxy.infra import config
    return {name: msgspec.convert(values, type(getattr(config.Config(), name))) for name, values in sections.items()}


def test_a_cancel_through_b_cancels_the_ringing_phone_behind_a(tmp_path):
    a = instance(tmp_path, "a", A_HOST, trusted=B_HOST)
    b = instance(tmp_path, "b", B_HOST, trusted=A_HOST)
    register_behind_nat(a)
    alice = Target("udp", "192.0.2.10", 5060)
    out = b.receive(invite(), alice)
    (to_a, _), = [(m, t) for m, t in out if m.method == "INVITE"]
    out = a.receive(wire(to_a), FROM_B)
    (to_bob, _), = [(m, t) for m, t in out if m.method == "INVITE"]
    ringing = a.receive(response_to(to_bob, 180, "Ringing"), NAT)          # 180 up to B ...
    (up, _), = [(m, t) for m, t in ringing if m.status == 180]
    b.receive(wire(up), FROM_A)                                            # ... and to alice
    out = b.receive(invite().replace("INVITE sip:bob@example.test SIP/2.0", "CANCEL sip:bob@example.test SIP/2.0")
                    .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"), alice)
    (cancel, hop), = [(m, t) for m, t in out if m.method == "CANCEL"]
    assert (hop.host, hop.port) == (A_HOST, 5060)
    out = a.receive(wire(cancel), FROM_B)
    (to_bob_cancel, hop), = [(m, t) for m, t in out if m.method == "CANCEL"]
    assert (hop.host, hop.port) == (NAT.host, NAT.port)
    assert a.core.transit                                                 # until bob's 487 ends it
    a.receive(response_to(to_bob, 487, "Request Terminated"), NAT)
    assert not a.core.transit


def test_media_for_a_natted_phone_behind_a_is_relayed_by_b_toward_the_phones_nat(tmp_path):
    """[media] policy "nat" on B: bob is NATed (behind A), so B anchors the media, and
    rtpengine is told bob's media comes from his NAT, not from A's address."""
    from proxy.media.ng import NgReply
    from tests.unit.test_media_relay import SDP_A, SDP_B, media_settings, with_sdp
    a = instance(tmp_path, "a", A_HOST, trusted=B_HOST)
    (tmp_path / "b").mkdir()
    b = subscriber_rig(tmp_path / "b", auth=False, host=B_HOST, location=str(tmp_path / "location.sqlite"),
                       trusted_sources=(f"{A_HOST}/32",), media=media_settings(policy="nat"))
    b.core.peering = Peering(SECRET, b.core.node)
    register_behind_nat(a)
    b.receive(with_sdp(invite(), SDP_A), Target("udp", "192.0.2.10", 5060))
    kind, params = b.effects.answer_media(NgReply(result="ok", sdp=SDP_A))
    assert kind == "offer"
    (to_a, _), = [(m, t) for m, t in b.effects.take() if m.method == "INVITE"]
    out = a.receive(wire(to_a), FROM_B)
    (to_bob, _), = [(m, t) for m, t in out if m.method == "INVITE"]
    ok = a.receive(with_sdp(response_to(to_bob, 200, "OK"), SDP_B), NAT)
    (up, _), = [(m, t) for m, t in ok if m.status == 200]
    b.receive(wire(up), FROM_A)
    kind, params = b.effects.answer_media(NgReply(result="ok", sdp=SDP_B))
    assert kind == "answer" and params["options"]["received-from"] == ["IP4", NAT.host]
