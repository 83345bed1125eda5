"""rtpengine's ng control protocol, sans-I/O: requests, retransmissions, replies.

A datagram is ``COOKIE SPACE BENCODED-DICT``; the reply carries the same
cookie.  ``NgSession`` holds the requests in flight and returns what to do:

    session = NgSession(Schedule(timeout=1.0, retries=2))
    send = session.request(("127.0.0.1", 2223), ping(), now)       # -> Send
    for action in session.due(now):   # Send (retransmission) or TimedOut
        ...
    outcome = session.on_datagram(data, source)                    # -> Answered | None

The edge (proxy/runtime/ngclient.py) owns the socket and the one timer; it
sends ``Send.datagram`` to ``Send.address`` and sleeps until
``session.next_due()``.  rtpengine answers a retransmitted request from its
cookie cache, so resending the same bytes is safe (an ``offer`` is not done
twice).

A reply is accepted only from the address its request went to and only for a
cookie in flight; anything else (late, duplicate, forged, malformed) is
dropped and counted, never raised: the socket is reachable by whoever can
send UDP to it.  Cookies are random (an off-path sender cannot guess them)
and requests in flight are bounded (``max_in_flight``).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

from proxy.media.bencode import BencodeError, Value, decode, encode

__all__ = [
    "Answered", "CallStats", "Datagram", "NgBusy", "NgReply", "NgSession", "Schedule", "Send",
    "SsrcStats", "StreamStats", "TimedOut", "Totals", "answer", "delete", "list_calls", "offer",
    "parse_reply", "ping", "query",
]

Address = tuple[str, int]
Command = dict[str, Value]
MAX_COOKIE = 64                     # bytes; ours are 16 hex digits


# --- requests ---------------------------------------------------------------------------

def ping() -> Command:
    return {"command": "ping"}


def offer(call_id: str, from_tag: str, sdp: str, **options: Value) -> Command:
    """``options``: rtpengine's own keys, e.g. ``flags=["trust-address"]``, ``replace=["origin"]``,
    ``ICE="remove"``, ``direction=["external", "internal"]`` (underscores become spaces)."""
    return {"command": "offer", "call-id": call_id, "from-tag": from_tag, "sdp": sdp, **_options(options)}


def answer(call_id: str, from_tag: str, to_tag: str, sdp: str, **options: Value) -> Command:
    return {"command": "answer", "call-id": call_id, "from-tag": from_tag, "to-tag": to_tag, "sdp": sdp,
            **_options(options)}


def delete(call_id: str, from_tag: str = "", to_tag: str = "", **options: Value) -> Command:
    """The whole call (no tags) or one branch of it (``from_tag`` / ``to_tag``)."""
    command: Command = {"command": "delete", "call-id": call_id}
    if from_tag:
        command["from-tag"] = from_tag
    if to_tag:
        command["to-tag"] = to_tag
    return {**command, **_options(options)}


def query(call_id: str, from_tag: str = "", to_tag: str = "") -> Command:
    command: Command = {"command": "query", "call-id": call_id}
    if from_tag:
        command["from-tag"] = from_tag
    if to_tag:
        command["to-tag"] = to_tag
    return command


def list_calls(limit: int = 32) -> Command:
    return {"command": "list", "limit": limit}


def _options(options: dict[str, Value]) -> Command:
    return {key.replace("_", " "): value for key, value in options.items()}


# --- statistics in delete/query replies -------------------------------------------------

@dataclass(frozen=True)
class Totals:
    packets: int = 0
    bytes: int = 0
    errors: int = 0


@dataclass(frozen=True)
class StreamStats:
    """One stream (RTP or RTCP port) of one media of one party, as rtpengine received it."""
    tag: str                        # the party's SIP tag
    media_index: int                # m-line, 1-based
    media_type: str                 # "audio", "video", ...
    local_port: int                 # rtpengine's port the party sends to
    endpoint: str                   # "address:port" the party sends from ("" before any packet)
    last_packet: int                # Unix time of the last packet received (0 = never)
    rtcp: bool                      # an RTCP-only stream
    packets: int
    bytes: int
    errors: int
    ssrc: int = 0                   # the RTP SSRC the party sent with (0 = none seen): its quality in SSRC


@dataclass(frozen=True)
class SsrcStats:
    ssrc: int
    packets: int
    bytes: int
    mos: float | None               # average MOS x 10 in rtpengine's reply, here 1.0..5.0
    jitter: float | None            # average, ms
    packet_loss: float | None       # average, percent
    round_trip_ms: float | None


@dataclass(frozen=True)
class CallStats:
    created: int = 0                # Unix time rtpengine created the call
    last_signal: int = 0
    rtp: Totals = Totals()
    rtcp: Totals = Totals()
    streams: tuple[StreamStats, ...] = ()
    ssrcs: tuple[SsrcStats, ...] = ()


@dataclass(frozen=True)
class NgReply:
    result: Literal["ok", "pong", "error", "load limit"] | str
    error_reason: str = ""
    warning: str = ""
    sdp: str = ""
    stats: CallStats | None = None  # delete and query replies
    raw: dict[str, Value] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "pong")


def parse_reply(command: str, reply: dict[str, Value]) -> NgReply:
    """The typed form of a decoded reply; missing or mistyped fields become defaults, never exceptions."""
    stats = _call_stats(reply) if command in ("delete", "query") and _text(reply.get("result")) == "ok" else None
    return NgReply(result=_text(reply.get("result")) or "error", error_reason=_text(reply.get("error-reason")),
                   warning=_text(reply.get("warning")), sdp=_text(reply.get("sdp")), stats=stats, raw=reply)


def _call_stats(reply: dict[str, Value]) -> CallStats:
    totals = _dict(reply.get("totals"))
    streams: list[StreamStats] = []
    for tag_key, party in _dict(reply.get("tags")).items():
        party = _dict(party)
        tag = _text(party.get("tag")) or tag_key
        for media in _list(party.get("medias")):
            media = _dict(media)
            for stream in _list(media.get("streams")):
                stream = _dict(stream)
                counts = _dict(stream.get("stats"))
                endpoint = _dict(stream.get("endpoint"))
                streams.append(StreamStats(
                    tag=tag, media_index=_int(media.get("index")), media_type=_text(media.get("type")),
                    local_port=_int(stream.get("local port")),
                    endpoint=(f"{_text(endpoint.get('address'))}:{_int(endpoint.get('port'))}"
                              if endpoint.get("address") else ""),
                    last_packet=_int(stream.get("last packet")),
                    rtcp="RTCP" in _list(stream.get("flags")) and "RTP" not in _list(stream.get("flags")),
                    packets=_int(counts.get("packets")), bytes=_int(counts.get("bytes")),
                    errors=_int(counts.get("errors")), ssrc=_int(stream.get("SSRC"))))
    ssrcs = [_ssrc_stats(key, _dict(value)) for key, value in _dict(reply.get("SSRC")).items()]
    return CallStats(created=_int(reply.get("created")), last_signal=_int(reply.get("last signal")),
                     rtp=_totals(totals.get("RTP")), rtcp=_totals(totals.get("RTCP")),
                     streams=tuple(streams), ssrcs=tuple(s for s in ssrcs if s is not None))


def _ssrc_stats(key: str, entry: dict[str, Value]) -> SsrcStats | None:
    try:
        ssrc = int(key)
    except ValueError:
        return None
    average = _dict(entry.get("average MOS"))
    return SsrcStats(ssrc=ssrc, packets=_int(entry.get("packets")), bytes=_int(entry.get("bytes")),
                     mos=_scaled(average.get("MOS"), 10), jitter=_scaled(average.get("jitter"), 1),
                     packet_loss=_scaled(average.get("packet loss"), 1),
                     round_trip_ms=_scaled(average.get("round-trip time"), 1000))


def _totals(value: Value | None) -> Totals:
    counts = _dict(value)
    return Totals(packets=_int(counts.get("packets")), bytes=_int(counts.get("bytes")),
                  errors=_int(counts.get("errors")))


def _scaled(value: Value | None, divisor: int) -> float | None:
    return value / divisor if isinstance(value, int) and value > 0 else None


def _int(value: Value | None) -> int:
    return value if isinstance(value, int) else 0


def _text(value: Value | None) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Value | None) -> dict[str, Value]:
    return value if isinstance(value, dict) else {}


def _list(value: Value | None) -> list[Value]:
    return value if isinstance(value, list) else []


# --- request/reply matching and retransmission -----------------------------------------

@dataclass(frozen=True)
class Schedule:
    """When a request is sent and when it is given up, as offsets from the first send.

    ``Schedule(timeout=1.0, retries=2).sends == (0.0, 1.0, 2.0)``, ``.deadline == 3.0``:
    each try waits ``timeout`` for its reply (rtpengine answers within
    milliseconds or is gone; a fixed interval keeps the worst case known)."""
    timeout: float = 1.0
    retries: int = 2

    @property
    def sends(self) -> tuple[float, ...]:
        return tuple(self.timeout * attempt for attempt in range(self.retries + 1))

    @property
    def deadline(self) -> float:
        return self.timeout * (self.retries + 1)


@dataclass(frozen=True)
class Send:
    address: Address
    datagram: bytes
    cookie: str
    attempt: int                    # 0 = first send


@dataclass(frozen=True)
class TimedOut:
    address: Address
    cookie: str
    command: str


@dataclass(frozen=True)
class Answered:
    address: Address
    cookie: str
    command: str
    reply: NgReply


@dataclass(frozen=True)
class Datagram:
    """A reply datagram split into its cookie and decoded dictionary."""
    cookie: str
    body: dict[str, Value]

    @classmethod
    def parse(cls, data: bytes) -> Datagram:
        cookie, space, body = data.partition(b" ")
        if not space or not cookie or len(cookie) > MAX_COOKIE:
            raise BencodeError("no cookie before the message")
        value = decode(body)
        if not isinstance(value, dict):
            raise BencodeError("message is not a dictionary")
        return cls(cookie.decode("ascii", "replace"), value)


class NgBusy(Exception):
    """Too many requests in flight; the caller treats it as a failed relay call."""


@dataclass
class _Pending:
    address: Address
    command: str
    datagram: bytes
    started: float
    attempt: int = 0


class NgSession:
    def __init__(self, schedule: Schedule = Schedule(), max_in_flight: int = 4096) -> None:
        self.schedule = schedule
        self.max_in_flight = max_in_flight
        self._pending: dict[str, _Pending] = {}
        self.dropped = 0            # datagrams that matched nothing or did not parse

    def __len__(self) -> int:
        return len(self._pending)

    def request(self, address: Address, command: Command, now: float) -> Send:
        if len(self._pending) >= self.max_in_flight:
            raise NgBusy(f"{len(self._pending)} ng requests in flight")
        cookie = secrets.token_hex(8)
        datagram = cookie.encode() + b" " + encode(command)
        self._pending[cookie] = _Pending(address, str(command["command"]), datagram, now)
        return Send(address, datagram, cookie, 0)

    def next_due(self) -> float | None:
        """When ``due`` next has something to do (monotonic time), or None when idle."""
        sends, deadline = self.schedule.sends, self.schedule.deadline
        times = [p.started + (sends[p.attempt + 1] if p.attempt + 1 < len(sends) else deadline)
                 for p in self._pending.values()]
        return min(times, default=None)

    def due(self, now: float) -> list[Send | TimedOut]:
        sends, deadline = self.schedule.sends, self.schedule.deadline
        actions: list[Send | TimedOut] = []
        for cookie, p in list(self._pending.items()):
            if p.attempt + 1 < len(sends) and now >= p.started + sends[p.attempt + 1]:
                p.attempt += 1
                actions.append(Send(p.address, p.datagram, cookie, p.attempt))
            elif p.attempt + 1 >= len(sends) and now >= p.started + deadline:
                del self._pending[cookie]
                actions.append(TimedOut(p.address, cookie, p.command))
        return actions

    def on_datagram(self, data: bytes, source: Address) -> Answered | None:
        try:
            message = Datagram.parse(data)
        except BencodeError:
            self.dropped += 1
            return None
        pending = self._pending.get(message.cookie)
        if pending is None or pending.address != source:
            self.dropped += 1
            return None
        del self._pending[message.cookie]
        return Answered(source, message.cookie, pending.command, parse_reply(pending.command, message.body))

    def cancel(self, cookie: str) -> None:
        self._pending.pop(cookie, None)
