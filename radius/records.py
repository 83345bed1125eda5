"""RADIUS accounting records from call state: pure, no clock, no I/O.

The worker folds a call's events with the CDR fold (proxy/contract/callfold.py) and asks
``plan`` after every change what accounting that call needs now, and
``interim`` on its timer.  Every record is a function of the call's events
(and the settings): its ``key`` and attributes come out the same on every
replay, so the durable queue (radius/queue.py) can drop a record it has seen.

Which records, when:

* **Start** (1) when the call is answered (and its INVITE is known);
* **Interim-Update** (3) number k once k x ``interim_interval_s`` of the
  answered call have passed (the worker's timer; only the latest one due);
* **Stop** (2) when it ends (BYE, dialog timeout, teardown, media timeout,
  session timer expiry, or silence) at the CDR's end: a media timeout's is
  the last media seen, so Acct-Session-Time stops there;
* **Failed** (15, OpenSIPS) for an unanswered call, if ``send_failed``.

Sessions (``multileg``):

* ``per-leg``: a session per leg, ``Acct-Session-Id = "<Call-ID>;leg=<n>"``,
  ``Acct-Multi-Session-Id = <Call-ID>``.  The answered leg gets Start /
  Interim / Stop; every other leg a Failed (if ``send_failed``).
* ``opensips``: one session per call, ``Acct-Session-Id = <Call-ID>`` as
  OpenSIPS's acc module sends it; call-level attributes from the answered
  leg (else the last leg), then the legs' attributes repeated in leg order
  (OpenSIPS "multi_leg_info" layout): ``Sip-Translated-Request-URI`` (leg
  target) and, with Cisco attributes on, a ``Cisco-AVPair``
  ``"sipledger-leg=<n>;parent=<p>;cause=<c>;code=<sip code>;disposition=<d>"``.

Attribute values follow OpenSIPS's aaa acc and Cisco voice gateways; times
are UTC.  Acct-Session-Time and Sip-Call-Duration are whole seconds rounded
up (the CDR's ``billable_s``), Sip-Call-MSDuration the exact milliseconds,
Sip-Call-Setuptime whole seconds INVITE -> answer (or final) truncated,
Sip-Call-Created the INVITE's Unix time.  Acct-Delay-Time is not part of a
record: the sender adds it on every send (``with_delay``).
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from typing import Literal

import msgspec

from proxy.contract.callfold import CallState, finish
from proxy.contract.cdr import CdrLeg

START, STOP, INTERIM, FAILED = 1, 2, 3, 15
STATUS_NAMES = {START: "Start", STOP: "Stop", INTERIM: "Interim-Update", FAILED: "Failed"}

# Acct-Terminate-Cause (RFC 2866 5.10)
USER_REQUEST, LOST_CARRIER, LOST_SERVICE, SESSION_TIMEOUT, ADMIN_RESET = 1, 2, 3, 5, 6
TERMINATE_CAUSES = {
    "caller": USER_REQUEST,       # BYE from the caller
    "callee": USER_REQUEST,       # BYE from the callee
    "timeout": SESSION_TIMEOUT,   # the dialog's maximum duration ran out
    "teardown": ADMIN_RESET,      # an operator / credit control teardown (call.control)
    "silence": LOST_SERVICE,      # no events for the silence window: the end was never seen
    "media_timeout": LOST_CARRIER,  # the media stopped (a phone vanished): the proxy ended the call
    "session_timer": LOST_SERVICE,  # RFC 4028: no session refresh came
}
# ends the network decided because a party was lost: Q.850 temporary failure
_LOST_ENDS = frozenset({"silence", "media_timeout", "session_timer"})

# Sip-Method values (dictionary.opensips)
SIP_INVITE, SIP_BYE = 1, 8
SERVICE_TYPE_SIP_SESSION = 15
MAX_STRING = 253                  # longest RADIUS string value
MAX_VSA_STRING = 247              # ... inside a Vendor-Specific attribute (RFC 2865 5.26), e.g. Cisco's

Value = str | int
Attr = tuple[str, Value]


class Record(msgspec.Struct, frozen=True, array_like=True):
    """One Accounting-Request to send (without Acct-Delay-Time)."""
    key: str                      # unique per (session, status[, interim number])
    session: str                  # Acct-Session-Id: records of one session are sent in order
    status: int                   # Acct-Status-Type
    ts_ms: int                    # Event-Timestamp (ms)
    attrs: tuple[Attr, ...]
    call_id: str = ""             # the call it accounts for (the worker files it under the call's partition)


class Progress(msgspec.Struct, frozen=True, array_like=True):
    """What a call has been sent so far (stored with its state)."""
    start: bool = False
    interims: int = 0             # number of the last Interim-Update emitted
    final: bool = False           # Stop / Failed emitted: the call is over


class Context(msgspec.Struct, frozen=True):
    """The settings records depend on."""
    nas_ip: str = "127.0.0.1"
    nas_identifier: str = ""
    multileg: Literal["per-leg", "opensips"] = "per-leg"
    opensips: bool = True
    cisco: bool = True
    send_failed: bool = False
    interim_ms: int = 0


def context_for(settings, node_name: str = "") -> Context:
    """A ``Context`` from ``RadiusSettings`` (NAS-Identifier defaults to the node name)."""
    return Context(nas_ip=settings.nas_ip, nas_identifier=settings.nas_identifier or node_name,
                   multileg=settings.multileg, opensips=settings.opensips_attributes,
                   cisco=settings.cisco_attributes, send_failed=settings.send_failed,
                   interim_ms=settings.interim_interval_s * 1000)


# --- identities ------------------------------------------------------------------------

def _fit(text: str, limit: int = MAX_STRING) -> str:
    """A string value of at most ``limit`` bytes: long ones keep a prefix and a hash."""
    if len(text) <= limit // 4:          # 4 bytes per character at most: fits, nothing to encode
        return text
    raw = text.encode()
    if len(raw) <= limit:
        return text
    digest = hashlib.sha1(raw).hexdigest()[:16]
    return raw[:limit - 17].decode(errors="ignore") + "#" + digest


def session_id(call_id: str, leg: int, multileg: str = "per-leg") -> str:
    """Acct-Session-Id: stable per call (opensips) or per call and leg (per-leg)."""
    if multileg == "opensips":
        return _fit(call_id)
    return _fit(f"{call_id};leg={leg}")


def record_key(session: str, status: int, number: int = 0) -> str:
    """The queue key: one record per (session, status, interim number)."""
    return f"{status}:{number}:{session}"


# --- value mappings --------------------------------------------------------------------

def terminate_cause(hangup_by: str) -> int:
    """Acct-Terminate-Cause from the CDR's ``hangup_by``."""
    return TERMINATE_CAUSES.get(hangup_by, USER_REQUEST)


# RFC 3398 section 8.2.6.1: SIP final response -> ISUP (Q.850) cause
_SIP_TO_Q850 = {
    400: 41, 401: 21, 402: 21, 403: 21, 404: 1, 405: 63, 406: 79, 407: 21, 408: 102,
    410: 22, 413: 127, 414: 127, 415: 79, 416: 127, 420: 127, 421: 127, 423: 127,
    480: 18, 481: 41, 482: 25, 483: 25, 484: 28, 485: 1, 486: 17,
    500: 41, 501: 79, 502: 38, 503: 41, 504: 102, 505: 127, 513: 127,
    600: 17, 603: 21, 604: 1,
}
# Not in RFC 3398's table: 487 (the caller cancelled: a normal clearing by the
# calling side), 488/606 ("by Warning header": interworking when there is none).
_SIP_TO_Q850.update({487: 16, 488: 127, 606: 127})
NORMAL_CLEARING = 16
TEMPORARY_FAILURE = 41
_REASON_CAUSE = re.compile(r"q\.850\s*;.*?\bcause\s*=\s*(\d{1,3})", re.IGNORECASE)


def q850_cause(sip_code: int) -> int:
    """Q.850 cause of a SIP final response (RFC 3398; unknown codes as the class's x00)."""
    if 200 <= sip_code < 300:
        return NORMAL_CLEARING
    if sip_code in _SIP_TO_Q850:
        return _SIP_TO_Q850[sip_code]
    if 400 <= sip_code < 700:
        return _SIP_TO_Q850[sip_code // 100 * 100]
    return TEMPORARY_FAILURE if sip_code == 0 else 31      # 31: normal, unspecified


def disconnect_cause(row: CdrLeg, answered: bool) -> int:
    """Q.850 cause of a call's end: the BYE's ``Reason: Q.850;cause=N`` if it
    had one, normal clearing for an answered call ended normally, temporary
    failure for one whose end was never seen or whose party was lost (media
timeout, session timer), else the failure code mapped."""
    if answered:
        match = _REASON_CAUSE.search(row.hangup_reason or "")
        if match and 0 < int(match.group(1)) < 128:
            return int(match.group(1))
        return TEMPORARY_FAILURE if row.hangup_by in _LOST_ENDS else NORMAL_CLEARING
    return q850_cause(row.sip_code or row.call_sip_code or (487 if row.disposition == "cancelled" else 0))


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def cisco_time(ms: int) -> str:
    """Cisco's h323 time format, UTC: ``"10:00:00.123 UTC Wed Nov 18 2026"``
    (no leading ``*``/``.``: the time is authoritative)."""
    clock, date = _cisco_second(ms // 1000)
    return f"{clock}.{ms % 1000:03d} {date}"


@functools.lru_cache(maxsize=4096)
def _cisco_second(second: int) -> tuple[str, str]:
    # a busy worker formats the same few seconds over and over (every record
    # carries 2-3 times, calls start and end together): 5% of its CPU uncached
    t = dt.datetime.fromtimestamp(second, tz=dt.UTC)
    return (f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}",
            f"UTC {_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day} {t.year}")


def _cisco(name: str, value: str) -> Attr:
    # Cisco gateways repeat the attribute name in the value
    return name, f"{name}={value}"


def uri_user_host(uri: str) -> str:
    """``user@host`` of a SIP URI (name-addr or addr-spec), without port or parameters."""
    text = uri.strip()
    if "<" in text:
        text = text[text.index("<") + 1:].split(">", 1)[0]
    scheme, sep, rest = text.partition(":")
    if not sep or "@" not in rest and scheme.lower() not in ("sip", "sips", "tel"):
        rest = text
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, at, host = rest.rpartition("@")
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    else:
        host = host.split(":", 1)[0]
    return f"{user}@{host}" if at else host


def user_name(row: CdrLeg) -> str:
    """User-Name: the authenticated account, else the From URI's user@host."""
    return row.account or uri_user_host(row.caller_uri)


def _whole_seconds_up(ms: int) -> int:
    return -(-max(ms, 0) // 1000)


# --- attribute sets --------------------------------------------------------------------

def _add(attrs: list[Attr], name: str, value: Value | None, limit: int = MAX_STRING) -> None:
    """Append unless empty (RADIUS has no empty attributes)."""
    if value is None or value == "":
        return
    attrs.append((name, _fit(value, limit) if isinstance(value, str) else value))


def _leg_info(ctx: Context, row: CdrLeg) -> list[Attr]:
    attrs: list[Attr] = []
    _add(attrs, "Sip-Translated-Request-URI", row.target or row.dialled)
    if ctx.cisco:
        attrs.append(("Cisco-AVPair", (f"sipledger-leg={row.leg};parent={row.parent_leg};"
                                       f"cause={row.leg_cause};code={row.sip_code};"
                                       f"disposition={row.disposition}")))
    return attrs


def build(ctx: Context, status: int, row: CdrLeg, *, legs: tuple[CdrLeg, ...] = (),
          ts_ms: int, session_time_s: int | None = None, number: int = 0) -> Record:
    """The attribute set of one record about ``row`` (the leg, or the call's
    main leg in the opensips layout, whose ``legs`` are appended)."""
    opensips_layout = ctx.multileg == "opensips"
    session = session_id(row.call_id, row.leg, ctx.multileg)
    answered = row.disposition == "answered"
    attrs: list[Attr] = [("Acct-Status-Type", status), ("Acct-Session-Id", session)]
    if not opensips_layout:
        _add(attrs, "Acct-Multi-Session-Id", row.call_id)
    _add(attrs, "User-Name", user_name(row))
    _add(attrs, "Calling-Station-Id", row.caller_uri)
    _add(attrs, "Called-Station-Id", row.dialled)
    _add(attrs, "NAS-IP-Address", ctx.nas_ip)
    _add(attrs, "NAS-Identifier", ctx.nas_identifier)
    attrs.append(("Event-Timestamp", ts_ms // 1000))
    if session_time_s is not None:
        attrs.append(("Acct-Session-Time", session_time_s))
    if status == STOP:
        attrs.append(("Acct-Terminate-Cause", terminate_cause(row.hangup_by)))

    if ctx.opensips:
        attrs.append(("Service-Type", SERVICE_TYPE_SIP_SESSION))
        attrs.append(("Sip-Method", SIP_BYE if status == STOP else SIP_INVITE))
        if status == FAILED:
            code = (row.call_sip_code if opensips_layout else row.sip_code) or \
                (487 if row.disposition == "cancelled" else row.call_sip_code)
        else:
            code = row.sip_code
        if code:
            attrs.append(("Sip-Response-Code", code))
        _add(attrs, "Sip-From-Tag", row.from_tag)
        _add(attrs, "Sip-To-Tag", row.to_tag)
        if status == STOP:
            attrs.append(("Sip-Call-Duration", _whole_seconds_up(row.duration_ms)))
            attrs.append(("Sip-Call-MSDuration", max(row.duration_ms, 0)))
        reached = row.answer_ms if answered else row.end_ms
        attrs.append(("Sip-Call-Setuptime", max(reached - row.setup_ms, 0) // 1000))
        attrs.append(("Sip-Call-Created", row.setup_ms // 1000))
        if not opensips_layout:
            _add(attrs, "Sip-Translated-Request-URI", row.target or row.dialled)

    if ctx.cisco:
        attrs.append(_cisco("h323-setup-time", cisco_time(row.setup_ms)))
        if answered and row.answer_ms:
            attrs.append(_cisco("h323-connect-time", cisco_time(row.answer_ms)))
        if status in (STOP, FAILED):
            attrs.append(_cisco("h323-disconnect-time", cisco_time(row.end_ms)))
            attrs.append(_cisco("h323-disconnect-cause", f"{disconnect_cause(row, answered):X}"))
        _add(attrs, "Cisco-AVPair", f"call-id={row.call_id}", MAX_VSA_STRING)

    if opensips_layout:
        for leg in legs:
            attrs.extend(_leg_info(ctx, leg))
    return Record(record_key(session, status, number), session, status, ts_ms, tuple(attrs), row.call_id)


# --- what a call needs -----------------------------------------------------------------

def _main_row(rows: list[CdrLeg]) -> CdrLeg:
    """The call's row for the opensips layout: the answered leg, else the last leg."""
    return next((r for r in rows if r.disposition == "answered"), rows[-1])


def _start(ctx: Context, rows: list[CdrLeg]) -> list[Record]:
    row = _main_row(rows)
    legs = tuple(rows) if ctx.multileg == "opensips" else ()
    return [build(ctx, START, row, legs=legs, ts_ms=row.answer_ms)]


def _snapshot(state: CallState, at_ms: int) -> list[CdrLeg] | None:
    """The rows of a live call as they stand at ``at_ms`` (the fold's silence
    close used as a snapshot: only the fields known by then are used)."""
    return finish(state, at_ms, silence=True)


def plan(state: CallState, progress: Progress, ctx: Context, *,
         silence_end_ms: int | None = None) -> tuple[list[Record], Progress]:
    """The records a call needs now that were not emitted yet (per ``progress``)
    and the new progress.  ``silence_end_ms``: close the call for silence, as
    ending then (the worker's silence timer).  ``progress.final`` in the result
    says the call is over."""
    if progress.final:
        return [], progress
    if silence_end_ms is not None:
        rows = finish(state, silence_end_ms, silence=True)
        if rows is None:                        # nothing but stray events: nothing to send
            return [], msgspec.structs.replace(progress, final=True)
    else:
        rows = finish(state, 0)
    records: list[Record] = []
    if rows is None:                            # not over
        answered = state.answered
        if answered is not None and state.invite is not None and not progress.start:
            snapshot = _snapshot(state, answered.ts) or []      # an answered call has rows
            records += _start(ctx, [r for r in snapshot if r.disposition == "answered"]
                              if ctx.multileg == "per-leg" else snapshot)
            progress = msgspec.structs.replace(progress, start=True)
        return records, progress

    answered_rows = [r for r in rows if r.disposition == "answered"]
    if answered_rows:
        if ctx.multileg == "opensips":
            if not progress.start:
                records += _start(ctx, rows)
            row = _main_row(rows)
            records.append(build(ctx, STOP, row, legs=tuple(rows), ts_ms=row.end_ms,
                                 session_time_s=row.billable_s))
        else:
            row = answered_rows[0]
            if not progress.start:
                records += _start(ctx, [row])
            records.append(build(ctx, STOP, row, ts_ms=row.end_ms, session_time_s=row.billable_s))
            if ctx.send_failed:
                records += [build(ctx, FAILED, r, ts_ms=r.end_ms) for r in rows
                            if r.disposition != "answered"]
    elif ctx.send_failed:
        if ctx.multileg == "opensips":
            row = _main_row(rows)
            records.append(build(ctx, FAILED, row, legs=tuple(rows), ts_ms=row.end_ms))
        else:
            records += [build(ctx, FAILED, r, ts_ms=r.end_ms) for r in rows]
    return records, msgspec.structs.replace(progress, start=progress.start or bool(answered_rows),
                                            final=True)


def interim(state: CallState, progress: Progress, ctx: Context,
            now_ms: int) -> tuple[list[Record], Progress]:
    """The Interim-Update due at ``now_ms`` for an answered call that has had
    its Start and not yet its end: number k = whole intervals since the
    answer; only the latest due is sent (after an outage the missed ones are
    not worth sending).  Its Event-Timestamp and Acct-Session-Time are those
    of the k-th interval, so a replay builds the same record."""
    answered = state.answered
    if not ctx.interim_ms or answered is None or not progress.start or progress.final:
        return [], progress
    number = (now_ms - answered.ts) // ctx.interim_ms
    if number <= progress.interims:
        return [], progress
    at_ms = answered.ts + number * ctx.interim_ms
    rows = _snapshot(state, at_ms)
    if not rows:
        return [], progress
    session_time = number * ctx.interim_ms // 1000
    if ctx.multileg == "opensips":
        row = _main_row(rows)
        record = build(ctx, INTERIM, row, legs=tuple(rows), ts_ms=at_ms,
                       session_time_s=session_time, number=number)
    else:
        row = next(r for r in rows if r.disposition == "answered")
        record = build(ctx, INTERIM, row, ts_ms=at_ms, session_time_s=session_time, number=number)
    return [record], msgspec.structs.replace(progress, interims=number)


# --- sending -----------------------------------------------------------------------------

def delay_seconds(enqueued_ms: int, now_ms: int) -> int:
    """Acct-Delay-Time: whole seconds since the record was first enqueued."""
    return max(0, (now_ms - enqueued_ms) // 1000)


def with_delay(attrs: tuple[Attr, ...], enqueued_ms: int, now_ms: int) -> tuple[Attr, ...]:
    """The attributes as sent at ``now_ms``: with Acct-Delay-Time (RFC 2866 5.2)."""
    return attrs + (("Acct-Delay-Time", delay_seconds(enqueued_ms, now_ms)),)
