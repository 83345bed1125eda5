"""CPU per call of the proxy core alone, in one process, without sockets.

    .venv/bin/python bench/proxy_cpu.py [CALLS] [--profile] [--nogc] [--auth]

What bench/sip_rate.sh measures end to end (SIPp's uac_rr/uas_rr calls:
INVITE, 180, 200, ACK, BYE, 200 through a Record-Routing proxy with the
bench's config: static route, trusted source, events on) but driven in
memory: the SIPp sides are simulated here and only the proxy's work is
timed (``Engine.on_data``, the timers it arms, the event encoding the
runtime does in ``emit``), with the worker's garbage-collector settings
(``tune_gc``), after a warm-up that fills the parse caches.  Printed: CPU
per call over 1,000-call rounds, mean (the figure), min and median (other
load on the machine only ever adds; a round with a collection pass costs
more).  On a machine shared with other work the end-to-end figure swings by
2x; this one repeats within ~5 %, so it is what each hot-path change is
judged by.  The kernel's share (sendto/recvfrom) and the runtime around the
core (uvloop, hand-off, outbox) are not in it.

``--profile`` prints the top of a cProfile of the same run; ``--nogc`` turns
the cycle collector off (what the collector costs).

``--auth``: the calls of sip_rate.sh's "credit" run instead (bench/uac_auth.xml
through bench/sip_rate_credit.toml): nobody trusted, each call by the next of
1,000 subscribers, challenged (INVITE, 407, ACK), then INVITE with digest
credentials, credit control asked before the relay and the fraud check run,
as a worker does with ``[auth]`` and ``[authorization]`` on.  The
authorization's answer (allowed, no cap) is given at once in the same
process: its UDP round trip to billing and billing's work are not in it.
"""
from __future__ import annotations

import heapq
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.contract import credit  # noqa: E402
from proxy.contract import events as ev  # noqa: E402
from proxy.core.callevents import CallEventFactory  # noqa: E402
from proxy.core.digest import DigestAuthenticator, compute_ha1, compute_response  # noqa: E402
from proxy.core.engine import Core, Engine  # noqa: E402
from proxy.core.fraudguard import FraudGuard  # noqa: E402
from proxy.core.node import LocalNode  # noqa: E402
from proxy.core.ports import Target  # noqa: E402
from proxy.infra.config import AuthorizationSettings, AuthSettings, FraudSettings, ProxySettings  # noqa: E402
from proxy.provisioning import service  # noqa: E402
from proxy.provisioning.live import LiveProvisioning  # noqa: E402
from proxy.provisioning.store import ProvisioningStore, default_url  # noqa: E402
from proxy.routing.live import LiveRouting  # noqa: E402
from proxy.routing.store import RoutingStore  # noqa: E402
from proxy.runtime.worker import tune_gc  # noqa: E402
from proxy.script.loader import load_script  # noqa: E402
from proxy.script.runner import ScriptRouting  # noqa: E402

UAC = Target("udp", "127.0.0.1", 5080, 1)
UAS = Target("udp", "127.0.0.1", 5070, 1)
DOMAIN, NUMBER, USERS = "bench.test", "4930123456", 1000      # --auth: as bench/sip_credit_setup.py
_seq = itertools.count()


class _Handle:
    """A timer as uvloop's: cancelling it drops the callback and its arguments
    at once (a cancelled timer that kept them would keep, say, a dialog whose
    3-hour limit timer was cancelled at the BYE)."""
    __slots__ = ("fn", "args")

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def cancel(self):
        self.fn = self.args = None


class BenchEffects:
    """The runtime's Effects, minus the sockets: sends are kept for the
    simulated peers, events are encoded as RuntimeEffects.emit does."""

    def __init__(self):
        self.now = 0.0
        self.sent: list[tuple[bytes, Target]] = []
        self.timers: list = []
        self.events = 0
        self.answers: list = []         # --auth: authorizations to answer once on_data returns
        self.authorizations = 0

    def send(self, data: bytes, target: Target) -> bool:
        self.sent.append((data, target))
        return True

    def call_later(self, delay, fn, *args):
        handle = _Handle(fn, args)
        heapq.heappush(self.timers, (self.now + delay, next(_seq), handle))
        return handle

    def emit(self, event) -> None:
        ev.key_bytes(event.call_id), ev.encode(event)
        self.events += 1

    def monotonic(self) -> float:
        return self.now

    def authorize(self, request: credit.AuthorizeRequest, callback) -> None:
        # what the worker's AuthorizationClient hands back: the decoded answer, later
        answer = credit.encode(credit.AuthorizeResponse(id=request.id, allowed=True))
        credit.encode(request)
        self.authorizations += 1
        self.answers.append((callback, answer))

    def answer(self) -> None:
        answers, self.answers = self.answers, []
        for callback, data in answers:
            callback(credit.decode_response(data))

    def advance(self, to: float) -> None:
        timers = self.timers
        while timers and timers[0][0] <= to:
            when, _, handle = heapq.heappop(timers)
            self.now = when
            if handle.fn is not None:
                handle.fn(*handle.args)
        self.now = to


def invite(n: int) -> bytes:
    sdp = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
           "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return (f"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{n}-1-0\r\n"
            f"From: sipp <sip:sipp@127.0.0.1:5080>;tag={n}SIPpTag00{n}\r\n"
            f"To: service <sip:service@127.0.0.1:5060>\r\n"
            f"Call-ID: {n}-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: sip:sipp@127.0.0.1:5080\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def auth_invite(n: int, cseq: int = 1, credentials: str = "") -> bytes:
    """bench/uac_auth.xml's INVITE: subscriber n % USERS dials NUMBER in DOMAIN."""
    user = f"u{n % USERS:05d}"
    sdp = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
           "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return (f"INVITE sip:{NUMBER}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{n}-{cseq}-0\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag={n}SIPpTag00{n}\r\n"
            f"To: <sip:{NUMBER}@{DOMAIN}>\r\n"
            f"Call-ID: {n}-4242@127.0.0.1\r\nCSeq: {cseq} INVITE\r\n"
            f"Contact: sip:{user}@127.0.0.1:5080\r\n{credentials}Max-Forwards: 70\r\n"
            f"Subject: Performance Test\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def answer_challenge(n: int, challenge: bytes) -> tuple[bytes, bytes]:
    """The ACK of the 407 and SIPp's Proxy-Authorization line for the retried INVITE."""
    h = _lines(challenge)
    user = f"u{n % USERS:05d}"
    nonce = h["proxy-authenticate"][0].split('nonce="', 1)[1].split('"', 1)[0]
    uri = f"sip:{NUMBER}@{DOMAIN}"
    response = compute_response("MD5", compute_ha1("MD5", user, DOMAIN, f"pw{n % USERS:05d}x"), nonce,
                                "INVITE", uri, "auth", "00000001", "6b8b4567")
    ack = (f"ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{n}-1-0\r\n"
           f"{h['from'][0]}\r\n{h['to'][0]}\r\n{h['call-id'][0]}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    line = (f'Proxy-Authorization: Digest username="{user}",realm="{DOMAIN}",cnonce="6b8b4567",'
            f'nc=00000001,qop=auth,uri="{uri}",nonce="{nonce}",response="{response}",algorithm=MD5\r\n')
    return ack, line.encode()


def _lines(data: bytes) -> dict[str, list[str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    out: dict[str, list[str]] = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), []).append(f"{name}:{value}")
    return out


def uas_response(request: bytes, status: str, n: int, sdp: bool = False, rr: bool = True) -> bytes:
    """What SIPp's uas_rr sends back: last Via/From/To(+tag)/Call-ID/CSeq/Record-Route."""
    h = _lines(request)
    to = h["to"][0] if ";tag=" in h["to"][0] else h["to"][0] + f";tag={n}SIPpTag01{n}"
    lines = [f"SIP/2.0 {status}", *h["via"], *h["from"], to, *h["call-id"], *h["cseq"]]
    if rr:
        lines += h.get("record-route", [])
    lines.append("Contact: <sip:127.0.0.1:5070;transport=UDP>")
    body = "v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
           "m=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" if sdp else ""
    if sdp:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def uac_request(method: str, cseq: int, n: int, ok: bytes) -> bytes:
    """SIPp's uac_rr ACK/BYE: to the 200's Contact, along its Record-Route (reversed)."""
    h = _lines(ok)
    routes = [v.split(":", 1)[1].strip() for v in h.get("record-route", [])]
    route = f"Route: {', '.join(reversed(routes))}\r\n" if routes else ""
    return (f"{method} sip:127.0.0.1:5070;transport=UDP SIP/2.0\r\n{route}"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{n}-{cseq}-{method}\r\n"
            f"{h['from'][0]}\r\n{h['to'][0]}\r\n{h['call-id'][0]}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: sip:sipp@127.0.0.1:5080\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def call(feed, n: int, auth: bool = False) -> None:
    """One SIPp call through ``feed(data, source) -> sent``; StopIteration when
    a message the SIPp side waits for never came."""
    if auth:
        out = feed(auth_invite(n), UAC)
        challenge = next(d for d, t in out if d.startswith(b"SIP/2.0 407"))
        ack, credentials = answer_challenge(n, challenge)
        feed(ack, UAC)
        out = feed(auth_invite(n, 2, credentials.decode()), UAC)
    else:
        out = feed(invite(n), UAC)
    fwd = next(d for d, t in out if d.startswith(b"INVITE") and t.port == UAS.port)
    feed(uas_response(fwd, "180 Ringing", n), UAS)
    out = feed(uas_response(fwd, "200 OK", n, sdp=True), UAS)
    ok = next(d for d, t in out if d.startswith(b"SIP/2.0 200"))
    cseq = 2 if auth else 1
    feed(uac_request("ACK", cseq, n, ok), UAC)
    out = feed(uac_request("BYE", cseq + 1, n, ok), UAC)
    bye = next(d for d, t in out if d.startswith(b"BYE"))
    feed(uas_response(bye, "200 OK", n, rr=False), UAS)


def build(tmp: Path, auth: bool = False) -> tuple[Engine, BenchEffects]:
    effects = BenchEffects()
    store = ProvisioningStore(default_url(tmp))
    store.create_schema()
    if auth:
        service.add_domain(store, DOMAIN)
        for i in range(USERS):
            store.add_user(f"u{i:05d}", DOMAIN, f"pw{i:05d}x")
    routing_store = RoutingStore(default_url(tmp))
    routing_store.create_schema()
    live, routing = LiveProvisioning(store, poll_interval=0), LiveRouting(routing_store, poll_interval=0)
    live.maybe_reload(float("inf"))
    routing.maybe_reload(float("inf"))
    node = LocalNode("127.0.0.1", {"udp": 5060}, 5060)
    if not auth:
        settings = ProxySettings(static_route="sip:127.0.0.1:5070", trusted_sources=("127.0.0.1/32",))
        core = Core(settings=settings, effects=effects, node=node, events=CallEventFactory("bench", 0),
                    provisioning=live, routing_data=routing)
        return Engine(core, ScriptRouting(core, load_script(None))), effects
    # as proxy/runtime/worker.py builds a worker with [auth] and [authorization] on
    settings = ProxySettings(static_route="sip:127.0.0.1:5070")
    authenticator = DigestAuthenticator.from_settings(b"bench-secret", AuthSettings())
    core = Core(settings=settings, effects=effects, node=node, events=CallEventFactory("bench", 0),
                provisioning=live, routing_data=routing, authenticator=authenticator,
                authorization=AuthorizationSettings())
    core.fraud = FraudGuard(core, FraudSettings())
    return Engine(core, ScriptRouting(core, load_script(None))), effects


def run(calls: int, profile: bool = False, auth: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine, effects = build(Path(tmp), auth)
        spent = 0.0
        clock = time.process_time

        def feed(data: bytes, source: Target) -> list[tuple[bytes, Target]]:
            nonlocal spent
            t0 = clock()
            engine.on_data(data, source)
            effects.answer()
            spent += clock() - t0
            out, effects.sent = effects.sent, []
            return out

        def one_call(n: int) -> None:
            call(feed, n, auth)

        def timers(to: float) -> None:
            nonlocal spent
            t0 = clock()
            effects.advance(to)
            spent += clock() - t0

        for n in range(3000):                    # warm up to steady state (parse caches full)
            one_call(n)
        timers(effects.now + 64)
        tune_gc()                                # as a worker runs
        if "--nogc" in sys.argv:
            import gc
            gc.disable()
        prof = None
        if profile:
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        rate = 1000                              # simulated calls/s: timers interleave as they would
        rounds: list[float] = []
        events0 = effects.events
        n = 10_000
        for _ in range(max(1, calls // ROUND)):  # min: the best round (other load only adds)
            spent = 0.0
            for i in range(ROUND):
                one_call(n)
                n += 1
                if i % 50 == 49:
                    timers(effects.now + 50 / rate)
            rounds.append(spent / ROUND * 1e6)
        timers(effects.now + 64)
        if prof is not None:
            prof.disable()
            import pstats
            pstats.Stats(prof).sort_stats("tottime").print_stats(35)
        mean = sum(rounds) / len(rounds)
        rounds.sort()
        print(f"calls={len(rounds) * ROUND} cpu_us_per_call mean={mean:.1f} min={rounds[0]:.1f} "
              f"median={rounds[len(rounds) // 2]:.1f} "
              f"events_per_call={(effects.events - events0) / (len(rounds) * ROUND):.1f}")


ROUND = 1000


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(int(args[0]) if args else 20000, profile="--profile" in sys.argv, auth="--auth" in sys.argv)
