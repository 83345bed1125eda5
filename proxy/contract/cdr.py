"""Call detail records: the output of the CDR processors (schema version 1).

One CDR per call, one row per leg (a forwarded or failed-over call has several
legs, chained by ``parent_leg``).  ``cdr_id`` is derived from the call's
identity (Call-ID + caller's From tag), so replaying the same events gives the
same id and the same rows: sinks are idempotent (ClickHouse ReplacingMergeTree).
All times are UTC epoch milliseconds; 0 means "did not happen".

Fields are only ever added, with defaults meaning what a row meant before
(docs/events.md "CDR rows"): the media columns came with issue 14.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Literal

import msgspec

CDR_SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("6f1d5a0e-2b9c-4c1e-9a57-5e1f0c2a7b31")
_NAMESPACE_BYTES = _NAMESPACE.bytes
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE_BYTES)      # copied per id: the namespace is hashed once
# RFC 4122 variant: the top two bits of the 17th hex digit are 10 (8, 9, a or b)
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}

Disposition = Literal["answered", "busy", "no_answer", "cancelled", "failed", "rejected_credit"]
# media_timeout: a media.timeout ended the call (end_ms = its last media);
# session_timer: an RFC 4028 session expiry (both added 2026-12-07, issue 14)
HangupBy = Literal["caller", "callee", "timeout", "teardown", "silence", "none",
                   "media_timeout", "session_timer"]


def cdr_id_for(call_id: str, from_tag: str) -> str:
    """Deterministic CDR id of a call (UUIDv5): the same call always gets the same id.

    ``str(uuid.uuid5(_NAMESPACE, f"{call_id}\\x00{from_tag}"))`` (RFC 4122 4.3:
    SHA-1 of namespace and name, version and variant bits set), written out on
    the hex digest: the version nibble is "5", the variant nibble keeps its two
    low bits under "10" (``_VARIANT``).  0.9 us instead of uuid5's 4.6 us (and
    the bytearray form's 1.3 us); RADIUS asks twice per answered call (its
    Start's snapshot and its Stop), the CDR processors once per CDR."""
    digest = _NAMESPACE_SHA1.copy()
    digest.update(f"{call_id}\x00{from_tag}".encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


class CdrLeg(msgspec.Struct, frozen=True, kw_only=True):
    cdr_id: str
    leg: int                          # 0 = first leg
    parent_leg: int = -1              # the leg this one was forked / forwarded / failed over from
    leg_cause: str = "initial"        # initial | fork | forward | failover
    legs: int = 1                     # number of legs of the call
    v: int = CDR_SCHEMA_VERSION
    call_id: str
    from_tag: str
    to_tag: str = ""
    # caller
    account: str = ""                 # authenticated user@domain ("" = unauthenticated/trusted)
    caller_uri: str = ""
    caller_ip: str = ""
    caller_user_agent: str = ""
    # callee
    dialled: str = ""                 # Request-URI as received
    callee_uri: str = ""              # To URI
    target: str = ""                  # where this leg went (contact or gateway URI)
    destination: str = ""             # next hop ip:port/transport
    gateway: str = ""                 # gateway name when routed to one
    domain: str = ""                  # served domain of the caller (or callee for inbound)
    callee_user_agent: str = ""
    # times (UTC epoch ms, 0 = did not happen)
    setup_ms: int
    ringing_ms: int = 0
    answer_ms: int = 0
    end_ms: int
    duration_ms: int = 0              # answer -> end
    billable_s: int = 0               # duration rounded up to whole seconds
    pdd_ms: int = 0                   # setup -> first provisional > 100 (or final), RFC 6076 SRD-like
    # outcome of this leg
    sip_code: int
    sip_reason: str = ""
    disposition: Disposition
    # outcome of the call (identical on every row of a CDR): what the caller got
    call_sip_code: int = 0            # the 2xx / final failure sent to the caller (0 = none: silence close)
    call_sip_reason: str = ""
    call_disposition: Disposition = "failed"
    hangup_by: HangupBy = "none"      # call-level, identical on every row
    hangup_reason: str = ""
    proxy: str = ""
    # media of this leg, from its latest media.stats (0 / None / "" = not relayed
    # or no stats): caller_* is what the caller sent, callee_* what the callee sent
    caller_rtp_packets: int = 0
    caller_rtp_bytes: int = 0
    caller_rtp_errors: int = 0
    caller_rtp_lost: int | None = None        # RTCP; None = unknown
    caller_rtp_jitter_ms: int | None = None
    caller_rtp_mos_x10: int | None = None
    callee_rtp_packets: int = 0
    callee_rtp_bytes: int = 0
    callee_rtp_errors: int = 0
    callee_rtp_lost: int | None = None
    callee_rtp_jitter_ms: int | None = None
    callee_rtp_mos_x10: int | None = None
    media_relay: str = ""                     # the rtpengine instance; "" = not relayed
    last_media_ms: int = 0                    # the last RTP packet of either party; 0 = none / unknown
