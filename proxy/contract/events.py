"""The call events the proxy publishes on `sip.events` (schema version 1).

This module is the API between the proxy and every processor (CDR, billing,
RADIUS).  Records are immutable msgspec structs, tagged by ``type`` and carrying
``v`` (schema version) and ``id`` (unique per event, the idempotency key).
Changing a field means a new version, never a silent edit: see docs/events.md.

Kafka key = Call-ID, so one call's events stay ordered on one partition.

Text from SIP messages: phones send bytes, not always UTF-8 (a Latin-1
display name ``"Jos\\xe9"`` is common).  The proxy decodes SIP as UTF-8 with
``surrogateescape`` (relayed bytes stay unchanged); in events every byte that
is not part of valid UTF-8 is *escaped* as the four characters ``\\xNN``
(lower-case hex), so every string field is valid UTF-8 JSON and readers need
no special decoding.  ``Jos\\xe9`` in an event is the byte 0xE9 on the wire;
a literal backslash sent by the phone is kept as is (the escape is for
display and matching, not a reversible encoding).  The Kafka key is the
Call-ID's raw bytes.  See docs/events.md "Text fields".
"""
from __future__ import annotations

import itertools
import os
from typing import Literal, get_args

import msgspec

SCHEMA_VERSION = 1


_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_event_id() -> str:
    """32 hex digits, unique without coordination: 64 random bits drawn once per
    process, then a counter (a getrandom() call per event cost ~3 % of a proxy
    worker's CPU)."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


class Caller(msgspec.Struct, frozen=True):
    from_uri: str
    account: str | None = None       # authenticated user as user@domain, None if unauthenticated
    display_name: str | None = None


class Callee(msgspec.Struct, frozen=True):
    request_uri: str                 # R-URI as received (the dialled number / AOR)
    to_uri: str
    target: str | None = None        # final target of this leg (contact or gateway URI)


class Source(msgspec.Struct, frozen=True):
    ip: str
    port: int
    transport: Literal["udp", "tcp"]


LegCause = Literal["initial", "fork", "forward", "failover"]   # why a branch exists
LEG_CAUSES: tuple[str, ...] = get_args(LegCause)


class Leg(msgspec.Struct, frozen=True):
    """One outgoing branch of a call.  Index 0 is the first; forks and
    forwards/failovers get the next indexes, ``parent`` is the leg that caused them."""
    index: int
    branch: str
    parent: int | None = None
    cause: LegCause = "initial"
    destination: str | None = None   # ip:port/transport the request went to
    gateway: str | None = None       # gateway name when routed to a PSTN gateway
    reason: str | None = None        # why a forward leg exists: unconditional | busy | no_answer | unavailable
    forwarded_by: str | None = None  # the subscriber (user@domain) whose forwarding made this leg


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    v: int = SCHEMA_VERSION
    ts_ms: int
    call_id: str
    from_tag: str
    to_tag: str | None = None
    proxy: str                       # proxy instance name (multi-node deployments)
    worker: int = 0


class InviteReceived(_Event, tag="invite.received", kw_only=True, frozen=True):
    """An initial INVITE accepted for routing (after authentication)."""
    branch: str                      # caller's top Via branch
    cseq: int
    caller: Caller
    callee: Callee
    source: Source
    user_agent: str | None = None
    max_duration_s: int | None = None


class InviteRouted(_Event, tag="invite.routed", kw_only=True, frozen=True):
    """The INVITE as forwarded on one leg."""
    leg: Leg
    callee: Callee


class CallProgress(_Event, tag="call.progress", kw_only=True, frozen=True):
    """First provisional response above 100 on a leg (PDD)."""
    leg: int
    code: int
    reason: str


class LegFailed(_Event, tag="leg.failed", kw_only=True, frozen=True):
    """A leg ended with a final non-2xx (or transport error / timeout: code 408/503)."""
    leg: int
    code: int
    reason: str


class CallAnswered(_Event, tag="call.answered", kw_only=True, frozen=True):
    """A 2xx to the initial INVITE: the dialog is confirmed on this leg."""
    leg: int
    code: int
    reason: str
    callee_user_agent: str | None = None
    max_duration_s: int


class CallFailed(_Event, tag="call.failed", kw_only=True, frozen=True):
    """The final failure response sent back to the caller (the call is over)."""
    code: int
    reason: str
    by_proxy: bool = False           # generated locally (404, 480, 403 …) vs relayed


class CallAck(_Event, tag="call.ack", kw_only=True, frozen=True):
    leg: int | None = None


class CallCancel(_Event, tag="call.cancel", kw_only=True, frozen=True):
    reason: str | None = None        # Reason header of the CANCEL, if any


class CallBye(_Event, tag="call.bye", kw_only=True, frozen=True):
    by: Literal["caller", "callee", "proxy"]
    reason: str | None = None        # Reason header, if any
    leg: int | None = None


class DialogTimeout(_Event, tag="dialog.timeout", kw_only=True, frozen=True):
    """The dialog's maximum duration elapsed: the proxy sent BYE both ways."""
    max_duration_s: int
    answered_ms: int


class DialogTeardown(_Event, tag="dialog.teardown", kw_only=True, frozen=True):
    """A `call.control` teardown was executed (or refused: ``result``)."""
    command_id: str
    reason: str
    result: Literal["sent", "unknown_call"]


class MaxDurationSet(_Event, tag="dialog.max_duration", kw_only=True, frozen=True):
    """A `call.control` set_max_duration was applied."""
    command_id: str
    max_duration_s: int
    result: Literal["applied", "unknown_call"]


# --- media relay, NAT keep-alives, session timers (issue 14) ----------------------

Party = Literal["caller", "callee"]
Silent = Literal["caller", "callee", "both"]


class MediaFlow(msgspec.Struct, frozen=True, kw_only=True):
    """What one party sent to the media relay (its RTP as rtpengine received it).
    Counters are totals since the offer.  Quality figures come from RTCP and are
    None when the phones sent none.  ``last_packet_ms``: 0 = no packet seen."""
    packets: int = 0
    bytes: int = 0
    errors: int = 0
    lost: int | None = None          # packets lost (RTCP)
    jitter_ms: int | None = None     # interarrival jitter, whole milliseconds
    mos_x10: int | None = None       # MOS x 10 (43 = 4.3), as rtpengine reports it
    last_packet_ms: int = 0


class MediaStats(_Event, tag="media.stats", kw_only=True, frozen=True):
    """Media counters of a relayed call, taken by ``query`` just before ``delete``
    (one per dialog end; a re-read later carries a new id and larger totals:
    readers keep the one with the latest ``ts_ms``)."""
    leg: int | None = None
    relay: str                       # the rtpengine instance (udp:IP:PORT)
    caller: MediaFlow                # what the caller sent
    callee: MediaFlow                # what the callee sent


class MediaTimeout(_Event, tag="media.timeout", kw_only=True, frozen=True):
    """The proxy ended the call because media stopped (BYE sent both ways).
    The call ended at ``last_media_ms`` (the last packet seen from the silent
    side; both: the later of the two), which CDRs and billing use as its end."""
    silent: Silent
    last_media_ms: int
    leg: int | None = None
    reason: str                      # e.g. "media timeout: callee silent for 10 s"


class SessionExpired(_Event, tag="dialog.session_expired", kw_only=True, frozen=True):
    """RFC 4028: no session refresh came within Session-Expires; the proxy
    ended the dialog (BYE both ways).  The call ended at ``ts_ms``."""
    session_expires_s: int
    last_refresh_ms: int
    leg: int | None = None


class BindingDropped(_Event, tag="registration.dropped", kw_only=True, frozen=True):
    """A registered contact removed by the proxy, not by its phone.  ``call_id``
    is the REGISTER's Call-ID, ``from_tag`` is empty.  Not a call: CDR, billing
    and RADIUS processors skip it."""
    aor: str
    contact: str
    received: str | None = None      # the NAT pinhole the proxy reached it at
    reason: Literal["keepalive_timeout"]
    failures: int


class FraudAlert(_Event, tag="fraud.alert", kw_only=True, frozen=True):
    """A fraud rule's warning or critical threshold reached (docs/fraud.md): at
    the INVITE (cpm, total, concurrent, sequential calls) or when an answered
    call ended (call_duration).  ``action`` says what the proxy did: ``none``,
    ``refused`` (403) or ``block_account`` (refused, and billing blocks the
    account).  Not a call record: CDR and RADIUS processors skip it."""
    severity: Literal["warning", "critical"]
    parameter: Literal["cpm", "total_calls", "concurrent_calls", "sequential_calls", "call_duration"]
    value: int
    threshold: int
    user: str                        # user@domain that placed the call
    account: str | None = None       # its billing account, when known
    number: str                      # the dialled number
    prefix: str                      # the rule's prefix (counters are per user and prefix)
    profile: str
    rule_id: int
    action: Literal["none", "refused", "block_account"] = "none"


CallEvent = (
    InviteReceived | InviteRouted | CallProgress | LegFailed | CallAnswered | CallFailed |
    CallAck | CallCancel | CallBye | DialogTimeout | DialogTeardown | MaxDurationSet |
    MediaStats | MediaTimeout | SessionExpired | BindingDropped | FraudAlert
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CallEvent)


def encode(event: CallEvent) -> bytes:
    """JSON of an event; bytes that were not UTF-8 on the wire become ``\\xNN``."""
    try:
        return _encoder.encode(event)
    except UnicodeEncodeError:      # a lone surrogate from a non-UTF-8 byte (rare path)
        return _encoder.encode(escaped(msgspec.to_builtins(event)))


def escape_text(text: str) -> str:
    """``text`` with each surrogate-escaped byte (a non-UTF-8 byte) as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def key_bytes(call_id: str) -> bytes:
    """The Kafka key of a call: its Call-ID as the phone sent it."""
    return call_id.encode("utf-8", "surrogateescape")


def escaped(value):
    """A builtins tree (msgspec.to_builtins) with every str made encodable as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            try:
                return escape_text(value)
            except UnicodeEncodeError:  # a surrogate no decoding made: replace it
                return value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {k: escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escaped(v) for v in value]
    return value


def decode(data: bytes) -> CallEvent:
    return _decoder.decode(data)


class Unreadable(ValueError):
    """A sip.events record a reader of this schema version cannot use.
    ``reason`` is ``undecodable`` (not a call event) or ``unknown_version``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def read(data: bytes | None) -> CallEvent:
    """A sip.events record as a call event of this schema version, else
    ``Unreadable``: readers count and skip such records, since one bad record
    must not stop a pipeline."""
    try:
        event = _decoder.decode(data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Unreadable("undecodable", str(exc)) from None
    if event.v != SCHEMA_VERSION:
        raise Unreadable("unknown_version", f"{type(event).__name__} v{event.v} (id {event.id})")
    return event
