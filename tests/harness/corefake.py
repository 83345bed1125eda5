"""Drive the sans-I/O proxy core without sockets: a recording Effects with a manual clock,
and the SIP messages two phones (ALICE, BOB) send it."""
from __future__ import annotations

import heapq
import itertools
from pathlib import Path

from proxy.contract.events import decode
from proxy.core.callevents import CallEventFactory
from proxy.core.digest import DigestAuthenticator, compute_ha1, compute_response, parse_digest
from proxy.core.engine import Core, Engine
from proxy.core.location import LocationStore
from proxy.core.node import LocalNode
from proxy.core.ports import Target
from proxy.core.registrar import Registrar
from proxy.infra.config import ProxySettings
from proxy.provisioning.live import LiveProvisioning
from proxy.provisioning.store import ProvisioningStore, default_url
from proxy.routing.live import LiveRouting
from proxy.routing.store import RoutingStore
from proxy.script.loader import load_script
from proxy.script.runner import ScriptRouting
from proxy.sip.message import ParseError, SipMessage, parse

_seq = itertools.count()


class _Handle:
    def __init__(self):
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class FakeEffects:
    def __init__(self):
        self.sent: list[tuple[SipMessage, Target]] = []
        self.keepalives: list[tuple[bytes, Target]] = []       # CRLF pings (RFC 5626), not SIP
        self.events = []
        self.now = 1000.0
        self._timers: list = []
        self.authorizations = []
        self.credit = None
        self.dns_queries: list[tuple[str, str, object]] = []   # (name, rdtype, callback): answer them
        self.media_requests: list[tuple[str, dict, object]] = []  # (kind, params, callback): answer them

    def send(self, data: bytes, target: Target) -> bool:
        if not data.strip(b"\r\n"):
            self.keepalives.append((data, target))
            return True
        try:
            msg = parse(data)
        except ParseError:   # a 400 echoing the malformed header it complains about
            first, second, third = data.split(b"\r\n", 1)[0].decode("utf-8", "surrogateescape").split(" ", 2)
            if first == "SIP/2.0":
                msg = SipMessage.response(int(second), third)
            else:            # a relayed request carrying what its sender wrote
                msg = SipMessage.request(first, second)
        self.sent.append((msg, target))
        return True

    def call_later(self, delay, fn, *args):
        handle = _Handle()
        heapq.heappush(self._timers, (self.now + delay, next(_seq), handle, fn, args))
        return handle

    def emit(self, event) -> None:
        self.events.append(decode(__import__("proxy.contract.events", fromlist=["encode"]).encode(event)))

    def monotonic(self) -> float:
        return self.now

    def authorize(self, request, callback) -> None:
        """Answered by ``self.credit(request)`` (None = no answer), as the service would."""
        self.authorizations.append(request)
        callback(self.credit(request) if self.credit else None)

    def dns_query(self, name, rdtype, callback) -> None:
        """Recorded; a test answers with ``answer_dns``."""
        self.dns_queries.append((name, rdtype, callback))

    def media(self, kind, params, callback) -> None:
        """Recorded; a test answers with ``answer_media``."""
        self.media_requests.append((kind, params, callback))

    def answer_media(self, reply=None, relay: str = "udp:127.0.0.1:2223", error: str = "") -> tuple[str, dict]:
        """Answer the oldest recorded ng request (``reply``: an ng.NgReply, None = no answer);
        returns its (kind, params)."""
        from proxy.core.ports import MediaResult
        kind, params, callback = self.media_requests.pop(0)
        callback(MediaResult(reply=reply, relay=relay if reply is not None else "",
                             error=error or ("" if reply is not None else "timeout")))
        return kind, params

    def answer_dns(self, answers: dict) -> None:
        """Answer the recorded queries: {(name, rdtype): Answer}; others get NXDOMAIN."""
        from proxy.core.resolver import Answer
        while self.dns_queries:
            name, rdtype, callback = self.dns_queries.pop(0)
            callback(answers.get((name, rdtype), Answer("nxdomain")))

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle, fn, args = heapq.heappop(self._timers)
            self.now = when
            if not handle.cancelled:
                fn(*args)
        self.now = end

    def take(self) -> list[tuple[SipMessage, Target]]:
        out, self.sent = self.sent, []
        return out


class CoreRig:
    """A proxy core on 10.0.0.1:5060 with a provisioning store in ``tmp``."""

    def __init__(self, tmp: Path, *, auth: bool = True, authorization=None, routing_data=None,
                 media=None, host: str = "10.0.0.1", location: str | None = None, **settings):
        self.effects = FakeEffects()
        self.tmp = tmp
        self.store = ProvisioningStore(default_url(tmp))
        self.store.create_schema()
        self.live = LiveProvisioning(self.store, poll_interval=0)
        self.routing_store = RoutingStore(default_url(tmp))
        self.routing_store.create_schema()
        self.routing = routing_data or LiveRouting(self.routing_store, poll_interval=0)
        self.location = LocationStore(location or str(tmp / "location.sqlite"))
        node = LocalNode(host, {"udp": 5060, "tcp": 5060}, 5060)
        self.core = Core(settings=ProxySettings(**settings), effects=self.effects, node=node,
                         events=CallEventFactory("test-proxy", 0), provisioning=self.live,
                         authenticator=DigestAuthenticator(b"k" * 32) if auth else None,
                         location=self.location, registrar=Registrar(self.location),
                         authorization=authorization, routing_data=self.routing, media=media)
        self.engine = Engine(self.core, ScriptRouting(self.core, load_script(None)))

    def reload(self):
        self.live.maybe_reload(float("inf"))
        self.routing.maybe_reload(float("inf"))

    def cli(self, *args: str) -> str:
        """Provision through the real `sipledger` CLI on this rig's data dir, then reload."""
        from typer.testing import CliRunner

        from api.cli import app
        result = CliRunner().invoke(app, ["--data-dir", str(self.tmp), *args])
        assert result.exit_code == 0, result.output
        self.reload()
        return result.output

    def authenticated(self, text: str, source: Target, user: str, password: str,
                      realm: str = "example.test") -> list[tuple[SipMessage, Target]]:
        """Send a request, answer its 407/401 challenge with digest credentials
        (MD5, qop=auth, as a phone would) and return what the retry produced."""
        out = self.receive(text, source)
        challenge = next(m for m, _ in out if m.status in (401, 407))
        header = "proxy-authenticate" if challenge.status == 407 else "www-authenticate"
        params = parse_digest(next(v for v in challenge.get_all(header) if "MD5" in v))
        request = parse(text.replace("\n", "\r\n").encode())
        uri, method = request.uri, request.method
        ha1 = compute_ha1("MD5", user, realm, password)
        response = compute_response("MD5", ha1, params["nonce"], method, uri, "auth", "00000001", "c0ffee")
        creds = (f'Digest username="{user}", realm="{realm}", nonce="{params["nonce"]}", uri="{uri}", '
                 f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"')
        name = "Proxy-Authorization" if challenge.status == 407 else "Authorization"
        cseq = request.cseq[0]
        retry = text.replace(f"CSeq: {cseq} {method}", f"CSeq: {cseq + 1} {method}\n{name}: {creds}")
        retry = retry.replace("branch=z9hG4bK", "branch=z9hG4bKretry", 1)
        return self.receive(retry, source)

    def receive(self, text: str, source: Target) -> list[tuple[SipMessage, Target]]:
        data = text.replace("\n", "\r\n").encode()
        self.engine.on_data(data, source)
        return self.effects.take()


def subscriber_rig(tmp: Path, users=("alice", "bob"), **options) -> CoreRig:
    """A rig serving example.test with these subscribers (password: first letter + "-secret")."""
    rig = CoreRig(tmp, **options)
    rig.store.add_domain("example.test")
    for user in users:
        rig.store.add_user(user, "example.test", f"{user[0]}-secret")
    rig.reload()
    return rig


# -- SIP messages as the rig's phones send them --------------------------------------------

ALICE = Target("udp", "192.0.2.10", 5060)
BOB = Target("udp", "192.0.2.20", 5062)


def register(rig, user="bob", port=5062, host="192.0.2.20", expires=3600, cseq=1):
    return rig.receive(f"""REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKreg{cseq};rport
From: <sip:{user}@example.test>;tag=r1
To: <sip:{user}@example.test>
Call-ID: reg-{user}
CSeq: {cseq} REGISTER
Contact: <sip:{user}@{host}:{port}>
Expires: {expires}
Max-Forwards: 70
Content-Length: 0

""", Target("udp", host, port))


def invite(call_id="call-1", to="bob", branch="z9hG4bKinv1", cseq=1, extra=""):
    return f"""INVITE sip:{to}@example.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport
From: "Alice" <sip:alice@example.test>;tag=a1
To: <sip:{to}@example.test>
Call-ID: {call_id}
CSeq: {cseq} INVITE
Contact: <sip:alice@192.0.2.10:5060>
Max-Forwards: 70
User-Agent: phone-a
{extra}Content-Type: application/sdp
Content-Length: 4

v=0
"""


def response_to(req, status, reason, to_tag="b1", extra=""):
    via = "\n".join(f"Via: {v}" for v in req.values("via"))
    rr = "\n".join(f"Record-Route: {v}" for v in req.values("record-route"))
    to = req.get("to") + (f";tag={to_tag}" if to_tag and status > 100 else "")
    return f"""SIP/2.0 {status} {reason}
{via}
{rr + chr(10) if rr else ''}From: {req.get('from')}
To: {to}
Call-ID: {req.call_id}
CSeq: {req.get('cseq')}
Contact: <sip:bob@192.0.2.20:5062>
{extra}Content-Length: 0

"""


# bob hangs up call-1 (after invite() was answered with response_to(..., to_tag="b1"))
BYE_FROM_BOB = """BYE sip:alice@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKbye1;rport
Route: <sip:10.0.0.1:5060;lr>
From: <sip:bob@example.test>;tag=b1
To: "Alice" <sip:alice@example.test>;tag=a1
Call-ID: call-1
CSeq: 7 BYE
Max-Forwards: 70
Content-Length: 0

"""
