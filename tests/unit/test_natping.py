"""NAT keep-alives (proxy/core/natping.py): who pings what when, and what a silent binding costs."""
from __future__ import annotations

import zlib

import pytest

from proxy.core.location import Binding
from proxy.core.natping import NatKeepalive, NatPinger
from proxy.core.ports import Target
from proxy.infra import clock
from tests.harness.corefake import subscriber_rig

pytestmark = pytest.mark.clock

T0 = 1_000_000.0


def binding(n: int, transport: str = "udp", worker: int | None = None, registered_at: float = 1.0) -> Binding:
    return Binding(aor=f"u{n}@example.test", contact=f"sip:u{n}@192.168.0.{n % 250}:5060",
                   expires_at=T0 + 3600, call_id=f"reg-{n}", cseq=1,
                   received=f"sip:203.0.113.{n % 250}:{20000 + n};transport={transport}",
                   transport=transport, registered_at=registered_at, nat=True, worker=worker)


def pings_over(pinger: NatPinger, start: float, seconds: float, step: float) -> list:
    """Every ping due in [start, start + seconds), each answered at once."""
    out = []
    for k in range(int(seconds / step) + 1):
        pings = pinger.due(min(start + k * step, start + seconds - 1e-6))
        for ping in pings:
            pinger.answered(ping.binding)
        out += pings
    return out


def test_every_udp_binding_is_pinged_by_exactly_one_worker_once_per_interval():
    bindings = [binding(n) for n in range(300)]
    workers = [NatPinger(i, 3, interval=30, failures=3) for i in range(3)]
    counts: dict[str, int] = {}
    for pinger in workers:
        pinger.refresh(bindings, T0)
        for ping in pings_over(pinger, T0, 30, step=1):
            counts[ping.binding.contact] = counts.get(ping.binding.contact, 0) + 1
    assert len(counts) == 300 and set(counts.values()) == {1}
    assert all(60 <= len(p.entries) <= 140 for p in workers)    # a fair share each


def test_pings_spread_over_the_interval_instead_of_bursting():
    pinger = NatPinger(0, 1, interval=30, failures=3)
    pinger.refresh([binding(n) for n in range(600)], T0)
    per_second = [len(pings_over(pinger, T0 + s, 1, step=1)) for s in range(30)]
    assert sum(per_second) == 600 and max(per_second) < 60         # ~20/s, never all at once


def test_tcp_bindings_belong_to_the_worker_owning_their_connection():
    tcp = [binding(n, "tcp", worker=n % 2) for n in range(10)]
    for index in range(2):
        pinger = NatPinger(index, 2, interval=10, failures=3)
        pinger.refresh(tcp, T0)
        assert {e.binding.worker for e in pinger.entries.values()} == {index}
        assert all(p.kind == "crlf" and p.expects_reply for p in pinger.due(T0 + 10))


def test_failures_in_a_row_drop_the_binding_and_any_reply_resets_them():
    b = binding(1)
    pinger = NatPinger(0, 1, interval=10, failures=3)
    pinger.refresh([b], T0)
    t = T0 + 10
    (ping,) = pinger.due(t)
    assert pinger.failed(b, t) is None
    (ping,) = pinger.due(t + 10)
    pinger.answered(ping.binding)                  # a 404 or a 481 is an answer too
    for k in range(2, 4):
        (ping,) = pinger.due(t + 10 * k)
        assert pinger.failed(b, t + 10 * k) is None
    (ping,) = pinger.due(t + 40)
    drop = pinger.failed(b, t + 40)
    assert drop is not None and drop.failures == 3 and drop.since == t + 20
    assert pinger.entries == {}


def test_a_binding_registered_again_starts_over():
    pinger = NatPinger(0, 1, interval=10, failures=2)
    pinger.refresh([binding(1)], T0)
    pinger.due(T0 + 10)
    assert pinger.failed(binding(1), T0 + 10) is None
    pinger.refresh([binding(1, registered_at=T0 + 12)], T0 + 12)
    pinger.due(T0 + 20)
    assert pinger.failed(binding(1, registered_at=T0 + 12), T0 + 20) is None   # a fresh count


def test_no_more_than_max_in_flight_options_await_a_reply():
    pinger = NatPinger(0, 1, interval=1, failures=3, max_in_flight=5)
    pinger.refresh([binding(n) for n in range(20)], T0)
    first = pinger.due(T0 + 1)
    assert len(first) == 5 and pinger.in_flight == 5
    assert pinger.due(T0 + 1.5) == []                              # nothing answered yet
    for ping in first:
        pinger.answered(ping.binding)
    assert len(pinger.due(T0 + 1.6)) == 5 and pinger.in_flight == 5


def test_crlf_over_udp_keeps_the_pinhole_but_detects_nothing():
    pinger = NatPinger(0, 1, interval=10, failures=1, method="CRLF")
    pinger.refresh([binding(1)], T0)
    (ping,) = pinger.due(T0 + 10)
    assert (ping.kind, ping.expects_reply, pinger.in_flight) == ("crlf", False, 0)


# -- the runner, on the proxy core -----------------------------------------------------------

PINHOLE = Target("udp", "203.0.113.5", 40000)

REGISTER = """REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bKregn;rport
From: <sip:bob@example.test>;tag=r1
To: <sip:bob@example.test>
Call-ID: reg-nat
CSeq: 1 REGISTER
Contact: <sip:bob@192.168.1.20:5062>
Expires: 3600
Max-Forwards: 70
Content-Length: 0

"""


def options_reply(options, status: int) -> str:
    via = "\n".join(f"Via: {v}" for v in options.values("via"))
    return (f"SIP/2.0 {status} Whatever\n{via}\nFrom: {options.get('from')}\nTo: {options.get('to')};tag=p\n"
            f"Call-ID: {options.call_id}\nCSeq: {options.get('cseq')}\nContent-Length: 0\n\n")


def test_the_runner_pings_the_pinhole_and_drops_a_silent_binding_with_an_event(tmp_path):
    rig = subscriber_rig(tmp_path, auth=False)
    rig.receive(REGISTER, PINHOLE)
    keepalive = NatKeepalive(rig.core, rig.location, NatPinger(0, 1, interval=5, failures=2))
    now = clock.time()

    def ping_at(t):
        """Tick as the worker does (every 0.5 s here) up to ``t``: the pings sent."""
        sent = []
        while ping_at.t < t:
            ping_at.t += 0.5
            keepalive.tick(ping_at.t)
            sent += [(m, d) for m, d in rig.effects.take() if m.method == "OPTIONS"]
        return sent
    ping_at.t = now

    (options, dest), = ping_at(now + 5)
    assert options.uri == "sip:bob@192.168.1.20:5062" and (dest.host, dest.port) == ("203.0.113.5", 40000)
    rig.receive(options_reply(options, 404), PINHOLE)               # any reply: alive
    assert keepalive.pinger.entries[("bob@example.test", "sip:bob@192.168.1.20:5062")].failures == 0
    for k in (2, 3):                                               # then silence
        assert ping_at(now + 5 * k)
        rig.effects.advance(64 * 0.5)                              # Timer F: no answer
    assert rig.location.lookup("bob@example.test", now) == []
    (dropped,) = [e for e in rig.effects.events if type(e).__name__ == "BindingDropped"]
    assert (dropped.aor, dropped.contact, dropped.reason, dropped.failures) == (
        "bob@example.test", "sip:bob@192.168.1.20:5062", "keepalive_timeout", 2)
    assert dropped.received == "sip:203.0.113.5:40000;transport=udp" and dropped.call_id == "reg-nat"


def test_a_tcp_binding_whose_connection_closed_is_dropped(tmp_path):
    rig = subscriber_rig(tmp_path, auth=False)
    flows = {("203.0.113.5", 51000)}
    rig.effects.flow = lambda t, w: Target(t.transport, t.host, t.port, 7) if (t.host, t.port) in flows else None
    rig.receive(REGISTER.replace("UDP", "TCP"), Target("tcp", "203.0.113.5", 51000, 7))
    keepalive = NatKeepalive(rig.core, rig.location, NatPinger(0, 1, interval=5, failures=2))
    now = clock.time()
    for k in range(11):
        keepalive.tick(now + k)
    assert {(t.conn, data) for data, t in rig.effects.keepalives} == {(7, b"\r\n\r\n")}  # twice
    assert len(rig.effects.keepalives) == 2 and rig.location.lookup("bob@example.test", now)
    flows.clear()                                                 # the phone's connection closed
    for k in range(11, 21):
        keepalive.tick(now + k)
    assert rig.location.lookup("bob@example.test", now) == []
    assert [type(e).__name__ for e in rig.effects.events][-1] == "BindingDropped"


def test_an_options_ping_carries_a_call_id_its_worker_owns(tmp_path):
    """Its reply comes back to the shared port, which hands it to the Call-ID's owner."""
    from proxy.core.node import call_owner
    rig = subscriber_rig(tmp_path, auth=False)
    rig.receive(REGISTER, PINHOLE)
    (binding,) = rig.location.nated(clock.time())
    index = zlib.crc32(f"{binding.aor}\0{binding.contact}".encode()) % 3       # the binding's worker
    keepalive = NatKeepalive(rig.core, rig.location, NatPinger(index, 3, interval=1, failures=2))
    now = clock.time()
    options = []
    for k in range(1, 31):
        keepalive.tick(now + k * 0.5)
        for m, _ in rig.effects.take():
            if m.method == "OPTIONS":
                options.append(m)
                rig.receive(options_reply(m, 200), PINHOLE)
    assert len({m.call_id for m in options}) >= 10
    assert {call_owner(m.call_id.encode(), 3) for m in options} == {index}


def test_the_store_is_read_a_page_per_tick_and_unregistered_bindings_are_forgotten(tmp_path):
    rig = subscriber_rig(tmp_path, auth=False)
    now = clock.time()
    for n in range(25):
        b = binding(n)
        with rig.location.edit(b.aor, now) as edit:
            edit.put(Binding(**{**{f: getattr(b, f) for f in b.__dataclass_fields__},
                                "expires_at": now + 3600, "registered_at": now}))
    keepalive = NatKeepalive(rig.core, rig.location, NatPinger(0, 1, interval=10, failures=3))
    keepalive.PAGE = 10
    keepalive.tick(now)
    assert len(keepalive.pinger.entries) == 10 and keepalive.reading        # one page per tick
    keepalive.tick(now + 0.1)
    keepalive.tick(now + 0.2)
    assert len(keepalive.pinger.entries) == 25 and not keepalive.reading
    with rig.location.edit("u3@example.test", now) as edit:                  # unregistered
        edit.remove("sip:u3@192.168.0.3:5060")
    for k in range(1, 4):
        keepalive.tick(now + 10 + k * 0.1)
    assert len(keepalive.pinger.entries) == 24
    assert ("u3@example.test", "sip:u3@192.168.0.3:5060") not in keepalive.pinger.entries


def test_a_ping_unanswered_by_the_next_one_counts_as_failed_whatever_the_transaction_timer():
    """nathelper's rule: no reply by the next interval is a failure (the OPTIONS
    transaction itself gives up only after 64*T1 = 32 s); a late timeout of a
    superseded ping is not counted twice, a late answer still proves the phone alive."""
    b = binding(1)
    pinger = NatPinger(0, 1, interval=1, failures=3)
    pinger.refresh([b], T0)
    (first,) = pinger.due(T0 + 1)
    (second,) = pinger.due(T0 + 2)                 # the first one failed here
    assert pinger.entries[(b.aor, b.contact)].failures == 1 and pinger.in_flight == 1
    assert pinger.failed(b, T0 + 1, first.number) is None        # its Timer F, much later
    assert pinger.entries[(b.aor, b.contact)].failures == 1
    pinger.answered(b, first.number)               # a late reply: alive after all
    assert pinger.entries[(b.aor, b.contact)].failures == 0 and pinger.in_flight == 1
    for k in (3, 4, 5):
        pinger.due(T0 + k)
    (drop,) = pinger.drops
    assert drop.failures == 3 and drop.since == T0 + 2
    assert pinger.entries == {} and pinger.in_flight == 0
