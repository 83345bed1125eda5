"""NAT detection (proxy/core/nat.py), what the registrar stores, and where requests to NATed phones go."""
from __future__ import annotations

import sqlite3

import pytest

from proxy.core import nat
from proxy.core.location import SCHEMA_VERSION, LocationStore
from proxy.core.nat import NatFlag
from proxy.core.ports import Target
from proxy.infra import clock
from proxy.sip.message import parse
from tests.harness.corefake import ALICE, BYE_FROM_BOB, invite, register, response_to, subscriber_rig

pytestmark = pytest.mark.clock

PINHOLE = Target("udp", "203.0.113.5", 40000)       # the NAT's public side (a documentation range)


def request(via="192.168.1.20:5062;rport", contact="<sip:bob@192.168.1.20:5062>", method="REGISTER"):
    text = (f"{method} sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKx\r\n"
            f"From: <sip:bob@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\n"
            f"CSeq: 1 {method}\r\n" + (f"Contact: {contact}\r\n" if contact else "") +
            "Content-Length: 0\r\n\r\n")
    return parse(text.encode())


@pytest.mark.parametrize("host, private", [
    ("10.1.2.3", True), ("172.16.0.1", True), ("172.31.255.255", True), ("192.168.0.1", True),
    ("100.64.0.1", True), ("100.127.255.254", True), ("fd00::1", True), ("[fc00::5]", True),
    ("172.32.0.1", False), ("100.128.0.1", False), ("203.0.113.7", False), ("192.0.2.1", False),
    ("198.51.100.1", False), ("127.0.0.1", False), ("169.254.1.1", False), ("2001:db8::1", False),
    ("::ffff:192.168.1.1", True), ("pbx.example", False),
])
def test_private_means_the_ranges_a_nat_hides_not_documentation_ones(host, private):
    assert nat.is_private(host) is private


def test_each_rule_fires_on_its_own_evidence():
    # behind a NAT: private Via and Contact, another address, another port
    assert nat.detect(request(), PINHOLE) == (NatFlag.CONTACT_PRIVATE | NatFlag.VIA_RECEIVED
                                              | NatFlag.VIA_PRIVATE)
    # a phone on a public address, Contact and Via = where it sends from
    public = Target("udp", "198.51.100.9", 5062)
    assert nat.detect(request(via="198.51.100.9:5062;rport", contact="<sip:bob@198.51.100.9:5062>"),
                      public) == NatFlag(0)
    # a STUN-aware phone: public Contact, but the Via gives the NAT away
    stun = request(contact="<sip:bob@203.0.113.5:40000>")
    assert nat.detect(stun, PINHOLE) == NatFlag.VIA_RECEIVED | NatFlag.VIA_PRIVATE
    # source port differs from the Via's and no rport asked (nat_uac_test 16) ...
    moved = request(via="198.51.100.9:5062", contact="<sip:bob@198.51.100.9:5062>")
    assert nat.detect(moved, Target("udp", "198.51.100.9", 31000)) == NatFlag.VIA_PORT
    # ... but with rport the answer goes to the source port anyway
    assert nat.detect(request(via="198.51.100.9:5062;rport", contact="<sip:bob@198.51.100.9:5062>"),
                      Target("udp", "198.51.100.9", 31000)) == NatFlag(0)
    # the rport hint is in the table but not in the default rules
    assert nat.detect(request(via="198.51.100.9:5062;rport", contact=None), public,
                      rules=NatFlag.RPORT_ASKED) == NatFlag.RPORT_ASKED


def test_a_private_address_that_is_the_source_is_the_proxys_own_lan():
    lan = Target("udp", "192.168.1.20", 5062)
    assert not nat.sender_nated(request(), lan)
    assert nat.sender_nated(request(), PINHOLE)


def test_garbage_contact_or_via_is_no_evidence():
    assert nat.detect(request(via="198.51.100.9:5062;rport", contact="<bogus>"),
                      Target("udp", "198.51.100.9", 5062)) == NatFlag(0)
    assert nat.detect(request(via="198.51.100.9:5062;rport", contact="*"),
                      Target("udp", "198.51.100.9", 5062)) == NatFlag(0)


# -- the registrar and lookups ------------------------------------------------------------

REGISTER_BEHIND_NAT = """REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/{transport} 192.168.1.20:5062;branch=z9hG4bKregn{cseq};rport
From: <sip:bob@example.test>;tag=r1
To: <sip:bob@example.test>
Call-ID: reg-nat
CSeq: {cseq} REGISTER
Contact: <{contact}>
Expires: 3600
Max-Forwards: 70
Content-Length: 0

"""


@pytest.fixture
def rig(tmp_path):
    return subscriber_rig(tmp_path, auth=False)


def register_natted(rig, source=PINHOLE, contact="sip:bob@192.168.1.20:5062", cseq=1):
    out = rig.receive(REGISTER_BEHIND_NAT.format(transport=source.transport.upper(), cseq=cseq,
                                                 contact=contact), source)
    assert [m.status for m, _ in out] == [200]


def test_a_natted_registration_is_flagged_with_its_pinhole(rig):
    register_natted(rig)
    (binding,) = rig.location.lookup("bob@example.test", clock.time())
    assert binding.nat and binding.received == "sip:203.0.113.5:40000;transport=udp"
    assert binding.worker is None                         # UDP: any worker reaches it


def test_a_public_contact_with_a_natted_via_still_goes_to_the_pinhole(rig):
    register_natted(rig, contact="sip:bob@198.51.100.77:5062")
    fwd, dest = rig.receive(invite(), ALICE)[1]
    assert fwd.uri == "sip:bob@198.51.100.77:5062" and (dest.host, dest.port) == ("203.0.113.5", 40000)
    assert dest.nat


def test_a_public_phone_is_reached_at_its_contact(rig):
    register(rig)
    (binding,) = rig.location.lookup("bob@example.test", clock.time())
    assert not binding.nat
    fwd, dest = rig.receive(invite(), ALICE)[1]
    assert (dest.host, dest.port, dest.nat) == ("192.0.2.20", 5062, False)


def test_the_runtime_picks_the_socket_the_pinhole_was_opened_toward(rig):
    """UDP to a NATed phone leaves from the public socket (flow), not a worker's own port."""
    asked = []

    def flow(target, worker):
        asked.append((target, worker))
        return Target(target.transport, target.host, target.port, 99)
    rig.effects.flow = flow
    register_natted(rig)
    _fwd, dest = rig.receive(invite(), ALICE)[1]
    assert asked == [(Target("udp", "203.0.113.5", 40000), None)] and dest.conn == 99


def test_tcp_requests_reuse_the_registration_connection_or_skip_a_natted_phone(rig):
    tcp = Target("tcp", "203.0.113.5", 51000, 7)
    flows = {("203.0.113.5", 51000): 7}
    rig.effects.flow = lambda t, worker: (Target("tcp", t.host, t.port, flows[(t.host, t.port)])
                                          if (t.host, t.port) in flows and worker == 0 else None)
    register_natted(rig, source=tcp, contact="sip:bob@192.168.1.20:5062;transport=tcp")
    (binding,) = rig.location.lookup("bob@example.test", clock.time())
    assert binding.worker == 0 and binding.received == "sip:203.0.113.5:51000;transport=tcp"
    _fwd, dest = rig.receive(invite(), ALICE)[1]
    assert (dest.transport, dest.conn, dest.nat) == ("tcp", 7, True)
    # the connection is gone: a NATed phone's private Contact is not dialled; nobody is left
    flows.clear()
    out = rig.receive(invite(call_id="call-2", branch="z9hG4bKinv2"), ALICE)
    assert [m.status for m, _ in out] == [480]


def test_a_public_tcp_phone_falls_back_to_its_contact_when_the_connection_is_gone(rig):
    rig.effects.flow = lambda t, worker: None
    public = Target("tcp", "198.51.100.9", 51000, 7)
    rig.receive(REGISTER_BEHIND_NAT.format(transport="TCP", cseq=1,
                                           contact="sip:bob@198.51.100.9:5062;transport=tcp")
                .replace("192.168.1.20:5062", "198.51.100.9:51000"), public)
    _fwd, dest = rig.receive(invite(), ALICE)[1]
    assert (dest.transport, dest.host, dest.port, dest.nat) == ("tcp", "198.51.100.9", 5062, False)


def test_bye_from_the_callee_reaches_a_natted_caller_through_its_pinhole(rig):
    """Alice calls from behind a NAT (private Contact and Via); Bob's BYE goes to her pinhole."""
    register(rig)
    natted = invite().replace("192.0.2.10:5060", "192.168.7.7:5060")
    alice_pinhole = Target("udp", "203.0.113.9", 33333)
    fwd = [m for m, _ in rig.receive(natted, alice_pinhole) if m.method == "INVITE"][0]
    rig.receive(response_to(fwd, 200, "OK"), Target("udp", "192.0.2.20", 5062))
    (dialog,) = rig.core.dialogs.dialogs.values()
    assert dialog.caller.nat and not dialog.callee.nat
    bye = BYE_FROM_BOB.replace("sip:alice@192.0.2.10:5060", "sip:alice@192.168.7.7:5060")
    out = rig.receive(bye, Target("udp", "192.0.2.20", 5062))
    (sent,) = [(m, t) for m, t in out if m.method == "BYE"]
    assert sent[0].uri == "sip:alice@192.168.7.7:5060"
    assert (sent[1].host, sent[1].port) == ("203.0.113.9", 33333)


# -- the schema ----------------------------------------------------------------------------

def test_a_version_1_location_file_gains_the_nat_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "location.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE location (aor TEXT NOT NULL, contact TEXT NOT NULL, expires_at REAL NOT NULL,
            q_milli INTEGER NOT NULL, call_id TEXT NOT NULL, cseq INTEGER NOT NULL, received TEXT,
            transport TEXT, user_agent TEXT, path TEXT, registered_at REAL NOT NULL,
            PRIMARY KEY (aor, contact)) WITHOUT ROWID;
        INSERT INTO location VALUES ('bob@example.test', 'sip:bob@192.0.2.20', 9e9, 1000, 'c', 1,
            'sip:192.0.2.20:5060;transport=udp', 'udp', NULL, NULL, 1.0);
        PRAGMA user_version = 1;
    """)
    conn.close()
    with LocationStore(path) as store:
        (binding,) = store.lookup("bob@example.test", 0)
        assert binding.contact == "sip:bob@192.0.2.20" and not binding.nat and binding.worker is None
        assert store.nated(0) == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()
    LocationStore(path).close()                                  # opening again changes nothing


def test_a_location_file_from_a_newer_version_is_refused(tmp_path):
    from proxy.core.location import LocationError
    path = tmp_path / "location.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LocationError, match="newer"):
        LocationStore(path)


# -- configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("text, key", [
    ("[nat]\nkeepalive_seconds = 0\n", "nat.keepalive_seconds"),
    ("[nat]\nkeepalive_failures = 0\n", "nat.keepalive_failures"),
    ("[nat]\nkeepalive_method = \"STUN\"\n", "keepalive_method"),
    ("[session_timer]\nmin_se_seconds = 60\n", "session_timer.min_se_seconds"),
    ("[session_timer]\nsession_expires_seconds = 100\nmin_se_seconds = 120\n",
     "session_timer.session_expires_seconds"),
    ("[nat]\nping_seconds = 5\n", "ping_seconds"),
])
def test_nat_and_session_timer_settings_are_checked(tmp_path, text, key):
    from proxy.infra.config import ConfigError, load
    path = tmp_path / "sipledger.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load(path)


def test_the_defaults_are_safe_and_valid(tmp_path):
    from proxy.infra.config import load
    config = load(None)
    assert (config.nat.keepalive_seconds, config.nat.keepalive_failures, config.nat.keepalive_method) == (
        30.0, 3, "OPTIONS")
    assert (config.session_timer.enabled, config.session_timer.insert,
            config.session_timer.session_expires_seconds, config.session_timer.min_se_seconds) == (
        True, False, 1800, 90)
