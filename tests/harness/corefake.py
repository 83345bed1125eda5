"""Drive the sans-I/O proxy core without sockets: a recording Effects with a manual clock."""
from __future__ import annotations

import heapq
import itertools
from pathlib import Path

from proxy.contract.events import decode
from proxy.core.callevents import CallEventFactory
from proxy.core.digest import DigestAuthenticator
from proxy.core.engine import Core, Engine
from proxy.core.location import LocationStore
from proxy.core.node import LocalNode
from proxy.core.ports import Target
from proxy.core.registrar import Registrar
from proxy.script.loader import load_script
from proxy.script.runner import ScriptRouting
from proxy.provisioning.live import LiveProvisioning
from proxy.provisioning.store import ProvisioningStore
from proxy.settings import ProxySettings
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
        self.events = []
        self.now = 1000.0
        self._timers: list = []

    def send(self, data: bytes, target: Target) -> bool:
        try:
            msg = parse(data)
        except ParseError:   # a 400 echoing the malformed header it complains about
            _, status, reason = data.split(b"\r\n", 1)[0].decode().split(" ", 2)
            msg = SipMessage.response(int(status), reason)
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

    def __init__(self, tmp: Path, *, auth: bool = True, **settings):
        self.effects = FakeEffects()
        self.store = ProvisioningStore(f"sqlite:///{tmp / 'prov.sqlite'}")
        self.store.create_schema()
        self.live = LiveProvisioning(self.store, poll_interval=0)
        self.location = LocationStore(str(tmp / "location.sqlite"))
        node = LocalNode("10.0.0.1", {"udp": 5060, "tcp": 5060}, 5060)
        self.core = Core(settings=ProxySettings(**settings), effects=self.effects, node=node,
                         events=CallEventFactory("test-proxy", 0), provisioning=self.live,
                         authenticator=DigestAuthenticator(b"k" * 32) if auth else None,
                         location=self.location, registrar=Registrar(self.location))
        self.engine = Engine(self.core, ScriptRouting(self.core, load_script(None)))

    def reload(self):
        self.live.maybe_reload(float("inf"))

    def receive(self, text: str, source: Target) -> list[tuple[SipMessage, Target]]:
        data = text.replace("\n", "\r\n").encode()
        self.engine.on_data(data, source)
        return self.effects.take()
