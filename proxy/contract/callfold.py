"""The call join as a pure fold: call events in, ``CallState`` out, CDR rows at the end.

Sans-I/O: nothing here reads a clock, a topic or a table.  The processor
(cdr/processor.py) feeds one call's events to ``apply`` in the order they come
off the partition and asks ``rows_ready`` after each one whether the call is
over (``finish`` would give rows), then ``finish`` once for its rows.

Order independence.  ``CallState`` is a set of facts, each merged by a rule
that is commutative, associative and idempotent (keep the earliest fact by
``(ts_ms, id)``, union of sets, min/max of times).  Folding any permutation of
a call's events, with any duplicates, gives the same state, hence the same
rows: replays and at-least-once delivery cannot change a CDR.  ``apply``
returns the very same object when an event changes nothing (a duplicate),
which the processor uses to skip table writes.

When a call is over (``finish``):
* answered: the earliest end at or after the answer: call.bye /
  dialog.timeout / dialog.teardown / dialog.session_expired at their
  ``ts_ms``, media.timeout at its ``last_media_ms`` (the call ended when its
  media stopped, not when that was detected: it sorts by that time, and
  counts if it was *detected* after the answer; its end is never earlier
  than the answer);
* unanswered: call.failed (a CANCEL, Timer C or teardown of a ringing call
  always ends in one);
* and ``invite.received`` is known (the rows need it; a call whose invite was
  lost is closed by the silence timer instead, ``silence=True``).

Rows: one ``CdrLeg`` per leg (``invite.routed``), or a single leg-0 row for a
call refused before routing.  Leg fields (``leg``, ``parent_leg``,
``leg_cause``, ``target``, ``destination``, ``ringing_ms``, ``answer_ms``,
``end_ms``, ``duration_ms``, ``billable_s``, ``sip_code``, ``sip_reason``,
``disposition``, ``callee_user_agent``, and the media columns from the leg's
latest media.stats, whose ``leg`` None means the answered leg) describe that
leg; every other field is the call's and identical on every row (setup, pdd,
``call_*``, hangup).

Not every event on the topic is about a call: ``is_call_event`` says which
are; processors skip the others (registration.dropped) before they create any
state, and ``apply`` leaves a state unchanged by them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from . import events as ev
from .cdr import CdrLeg, Disposition, cdr_id_for

NO_LEG = -1
SILENCE_REASON = "no events within the silence window"


# --- facts -------------------------------------------------------------------------
# array_like: the state is written to a changelog on every change; positional
# msgpack arrays keep it small.  Every fact carries (ts, id): ties are broken by
# the event id, so "the earliest" is a total order and the merge is deterministic.
# gc=False: facts hold only numbers, strings and other facts, so they cannot be
# part of a reference cycle; untracked, the tens of thousands of live states a
# processor keeps are not walked by every garbage collection (that walk was a
# quarter of the fold's CPU per call, measured in process).

class Invite(msgspec.Struct, frozen=True, array_like=True, gc=False):
    ts: int
    id: str
    from_tag: str
    account: str
    caller_uri: str
    caller_ip: str
    user_agent: str
    dialled: str
    callee_uri: str
    proxy: str


class Routed(msgspec.Struct, frozen=True, array_like=True, gc=False):
    ts: int
    id: str
    parent: int
    cause: str
    target: str
    destination: str
    gateway: str = ""


class Outcome(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A coded fact: call.progress, leg.failed, call.cancel (code 0)."""
    ts: int
    id: str
    code: int
    reason: str


class Answer(msgspec.Struct, frozen=True, array_like=True, gc=False):
    ts: int
    id: str
    leg: int
    code: int
    reason: str
    callee_user_agent: str
    max_duration_s: int
    to_tag: str


class Final(msgspec.Struct, frozen=True, array_like=True, gc=False):
    ts: int
    id: str
    code: int
    reason: str
    by_proxy: bool
    to_tag: str


class End(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What can end a call: kind "bye" (by caller/callee/proxy), "timeout",
    "teardown", "media_timeout", "session_timer".  ``ts`` is when the call
    ended; ``at`` when the event was emitted, where that differs (a media
    timeout is detected after the media stopped; 0 = ``ts``)."""
    ts: int
    id: str
    kind: str
    by: str
    reason: str
    at: int = 0

    @property
    def seen(self) -> int:
        return self.at or self.ts


class Flow(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One party's RTP as the relay received it (events.MediaFlow, kept small)."""
    packets: int = 0
    bytes: int = 0
    errors: int = 0
    lost: int | None = None
    jitter_ms: int | None = None
    mos_x10: int | None = None
    last_packet_ms: int = 0


class Media(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A leg's media.stats: the latest by (ts, id) counts (a re-read carries larger totals)."""
    ts: int
    id: str
    leg: int                              # NO_LEG: the answered leg
    relay: str
    caller: Flow
    callee: Flow


class Cap(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An applied dialog.max_duration: the latest one counts."""
    ts: int
    id: str
    seconds: int


class Seen(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The earliest event with a From tag: identity of a call whose invite is missing."""
    ts: int
    id: str
    from_tag: str
    proxy: str


class LegState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    index: int
    routed: Routed | None = None
    progress: Outcome | None = None       # first provisional > 100
    failed: Outcome | None = None         # leg.failed


class CallState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    call_id: str
    first_ms: int = 0                     # earliest / latest event time seen (0 = none yet)
    last_ms: int = 0
    seen: Seen | None = None
    invite: Invite | None = None
    legs: tuple[LegState, ...] = ()       # sorted by index
    answered: Answer | None = None
    failed: Final | None = None
    cancel: Outcome | None = None
    ends: tuple[End, ...] = ()            # sorted by (ts, id), no duplicates
    cap: Cap | None = None
    media: tuple[Media, ...] = ()         # one per leg (NO_LEG included), sorted by leg


def new_state(call_id: str) -> CallState:
    return CallState(call_id=call_id)


def _key(fact) -> tuple[int, str]:
    return fact.ts, fact.id


def _before(ts: int, event_id: str, old) -> bool:
    """A fact at (``ts``, ``event_id``) is earlier than ``old`` (None: than
    nothing), so it replaces ``old`` where the earliest counts.  Decided
    before the new fact is built: most events of a call repeat or lose to what
    is known, and building the fact for nothing was a good part of the fold's
    cost."""
    return old is None or ts < old.ts or (ts == old.ts and event_id < old.id)


def _after(ts: int, event_id: str, old) -> bool:
    """The same where the latest counts (media.stats, duration caps)."""
    return old is None or ts > old.ts or (ts == old.ts and event_id > old.id)


def _latest(old, new):
    return new if _after(new.ts, new.id, old) else old


# --- apply -------------------------------------------------------------------------

NOT_CALLS: tuple[type, ...] = (ev.BindingDropped, ev.FraudAlert)


def is_call_event(event: ev.CallEvent) -> bool:
    """False for events on sip.events that are not about a call (a dropped
    registration): processors skip them before creating any call state."""
    if type(event) in _CALL_TYPES:       # asked of every event: one set lookup, usually
        return True
    return not isinstance(event, NOT_CALLS)


def end_ms_of(event: ev.CallEvent) -> int:
    """When an event that ends a call says the call ended: a media timeout at
    its last media, every other at its ``ts_ms``.  (The fold and ``finish``
    also keep an answered call's end no earlier than its answer.)"""
    if isinstance(event, ev.MediaTimeout):
        return event.last_media_ms
    return event.ts_ms


def apply(state: CallState, event: ev.CallEvent) -> CallState:
    """Fold one event into the state.  Pure; the same object back when nothing changed."""
    handler = _HANDLERS.get(type(event), _time_only)
    if handler is None:                              # NOT_CALLS
        return state
    ts = event.ts_ms
    changes: dict = {}
    first = state.first_ms
    if first == 0 or ts < first:
        changes["first_ms"] = ts
    if ts > state.last_ms:
        changes["last_ms"] = ts
    if event.from_tag and _before(ts, event.id, state.seen):
        changes["seen"] = Seen(ts, event.id, event.from_tag, event.proxy)
    handler(state, event, changes)
    if not changes:
        return state
    return msgspec.structs.replace(state, **changes)


def _time_only(state: CallState, e: ev.CallEvent, changes: dict) -> None:
    """call.ack: only its time counts (first_ms / last_ms)."""


def _invite(state: CallState, e: ev.InviteReceived, changes: dict) -> None:
    if _before(e.ts_ms, e.id, state.invite):
        changes["invite"] = Invite(e.ts_ms, e.id, e.from_tag, e.caller.account or "", e.caller.from_uri,
                                   e.source.ip, e.user_agent or "", e.callee.request_uri, e.callee.to_uri,
                                   e.proxy)


def _leg_pos(legs: tuple[LegState, ...], index: int) -> int:
    """Where leg ``index`` is in ``legs``; -1 when it is not known yet."""
    for pos, leg in enumerate(legs):
        if leg.index == index:
            return pos
    return -1


def _set_leg(state: CallState, index: int, name: str, ts: int, event_id: str, make: Callable[[], Any],
             changes: dict) -> None:
    """Leg ``index``'s fact ``name`` becomes ``make()`` if (``ts``, ``event_id``)
    is earlier than the one it has (the leg is created if unknown)."""
    legs = state.legs
    pos = _leg_pos(legs, index)
    if pos < 0:
        leg = LegState(index, **{name: make()})
        if not legs or legs[-1].index < index:
            changes["legs"] = legs + (leg,)        # the usual case: legs come in index order
        else:
            changes["legs"] = tuple(sorted(legs + (leg,), key=lambda item: item.index))
    elif _before(ts, event_id, getattr(legs[pos], name)):
        leg = msgspec.structs.replace(legs[pos], **{name: make()})
        changes["legs"] = legs[:pos] + (leg,) + legs[pos + 1:]


def _routed(state: CallState, e: ev.InviteRouted, changes: dict) -> None:
    leg = e.leg
    _set_leg(state, leg.index, "routed", e.ts_ms, e.id, lambda: Routed(
        e.ts_ms, e.id, NO_LEG if leg.parent is None else leg.parent, leg.cause,
        e.callee.target or "", leg.destination or "", leg.gateway or ""), changes)


def _progress(state: CallState, e: ev.CallProgress, changes: dict) -> None:
    _set_leg(state, e.leg, "progress", e.ts_ms, e.id, lambda: Outcome(e.ts_ms, e.id, e.code, e.reason),
             changes)


def _leg_failed(state: CallState, e: ev.LegFailed, changes: dict) -> None:
    _set_leg(state, e.leg, "failed", e.ts_ms, e.id, lambda: Outcome(e.ts_ms, e.id, e.code, e.reason),
             changes)


def _answered(state: CallState, e: ev.CallAnswered, changes: dict) -> None:
    if _before(e.ts_ms, e.id, state.answered):
        changes["answered"] = Answer(e.ts_ms, e.id, e.leg, e.code, e.reason, e.callee_user_agent or "",
                                     e.max_duration_s, e.to_tag or "")


def _failed(state: CallState, e: ev.CallFailed, changes: dict) -> None:
    if _before(e.ts_ms, e.id, state.failed):
        changes["failed"] = Final(e.ts_ms, e.id, e.code, e.reason, e.by_proxy, e.to_tag or "")


def _cancel(state: CallState, e: ev.CallCancel, changes: dict) -> None:
    if _before(e.ts_ms, e.id, state.cancel):
        changes["cancel"] = Outcome(e.ts_ms, e.id, 0, e.reason or "")


def _has_end(state: CallState, event_id: str) -> bool:
    for old in state.ends:
        if old.id == event_id:
            return True
    return False


def _add_end(state: CallState, event_id: str, make: Callable[[], End], changes: dict) -> None:
    """The end ``make()`` joins the call's ends, in time order, unless the event
    ``event_id`` is there already (a redelivery: nothing is built for it)."""
    if _has_end(state, event_id):
        return
    end = make()
    ends = state.ends
    if not ends or _key(ends[-1]) < _key(end):
        changes["ends"] = ends + (end,)
    else:
        changes["ends"] = tuple(sorted(ends + (end,), key=_key))


def _bye(state: CallState, e: ev.CallBye, changes: dict) -> None:
    _add_end(state, e.id, lambda: End(e.ts_ms, e.id, "bye", e.by, e.reason or ""), changes)


def _timeout(state: CallState, e: ev.DialogTimeout, changes: dict) -> None:
    _add_end(state, e.id, lambda: End(e.ts_ms, e.id, "timeout", "", f"max duration {e.max_duration_s} s"),
             changes)


def _teardown(state: CallState, e: ev.DialogTeardown, changes: dict) -> None:
    if e.result == "sent":               # "unknown_call": nothing was ended
        _add_end(state, e.id, lambda: End(e.ts_ms, e.id, "teardown", "", e.reason), changes)


def _media_timeout(state: CallState, e: ev.MediaTimeout, changes: dict) -> None:
    _add_end(state, e.id, lambda: End(e.last_media_ms, e.id, "media_timeout", e.silent, e.reason, e.ts_ms),
             changes)


def _session_expired(state: CallState, e: ev.SessionExpired, changes: dict) -> None:
    _add_end(state, e.id, lambda: End(e.ts_ms, e.id, "session_timer", "",
                                      f"session expired: no refresh within {e.session_expires_s} s"), changes)


def _flow(flow: ev.MediaFlow) -> Flow:
    return Flow(flow.packets, flow.bytes, flow.errors, flow.lost, flow.jitter_ms, flow.mos_x10,
                flow.last_packet_ms)


def _media_stats(state: CallState, e: ev.MediaStats, changes: dict) -> None:
    leg = NO_LEG if e.leg is None else e.leg
    media = state.media
    pos = next((i for i, old in enumerate(media) if old.leg == leg), None)
    if pos is not None:
        old = media[pos]
        if not _after(e.ts_ms, e.id, old):
            return
    fact = Media(e.ts_ms, e.id, leg, e.relay, _flow(e.caller), _flow(e.callee))
    if pos is None:
        changes["media"] = tuple(sorted(media + (fact,), key=lambda item: item.leg))
    else:
        changes["media"] = media[:pos] + (fact,) + media[pos + 1:]


def _max_duration(state: CallState, e: ev.MaxDurationSet, changes: dict) -> None:
    if e.result == "applied":
        if _after(e.ts_ms, e.id, state.cap):
            changes["cap"] = Cap(e.ts_ms, e.id, e.max_duration_s)


# each handler adds its changes to the dict it is given; None: not a call event
_HANDLERS: dict[type, Callable[[CallState, Any, dict[str, Any]], None] | None] = {
    ev.InviteReceived: _invite,
    ev.InviteRouted: _routed,
    ev.CallProgress: _progress,
    ev.LegFailed: _leg_failed,
    ev.CallAnswered: _answered,
    ev.CallFailed: _failed,
    ev.CallCancel: _cancel,
    ev.CallBye: _bye,
    ev.DialogTimeout: _timeout,
    ev.DialogTeardown: _teardown,
    ev.MaxDurationSet: _max_duration,
    ev.MediaTimeout: _media_timeout,
    ev.SessionExpired: _session_expired,
    ev.MediaStats: _media_stats,
    ev.CallAck: _time_only,
    **{cls: None for cls in NOT_CALLS},
}
_CALL_TYPES = frozenset(cls for cls, handler in _HANDLERS.items() if handler is not None)


def live(state: CallState | None) -> CallState:
    """The state of a live call, where the processors keep None for a finished
    one and the caller has ruled that out."""
    if state is None:
        raise ValueError("a finished call has no live state")
    return state


def fold(events, state: CallState | None = None) -> CallState | None:
    """Fold a sequence of one call's events (convenience for tests and replays);
    None for no events and no state."""
    for event in events:
        if state is None:
            state = new_state(event.call_id)
        state = apply(state, event)
    return state


# --- silence -----------------------------------------------------------------------

def max_duration_ms(state: CallState) -> int | None:
    """The duration cap in force for an answered call (the proxy ends it there)."""
    if state.answered is None:
        return None
    seconds = state.cap.seconds if state.cap is not None else state.answered.max_duration_s
    return seconds * 1000 if seconds > 0 else None


def silence_deadline_ms(state: CallState, window_ms: int) -> int:
    """Event time after which the call counts as silent: ``window_ms`` after its
    last event, and for an answered call not before its maximum duration has
    run out plus the window (a long call sends no events while it lasts)."""
    base = state.last_ms
    cap = max_duration_ms(state)
    if cap is not None and state.answered is not None:    # a cap implies an answer
        base = max(base, state.answered.ts + cap)
    return base + window_ms


def silence_end_ms(state: CallState, window_ms: int) -> int:
    """The end time recorded for a call closed by silence: its last event plus
    the window, but an answered call no later than its maximum duration.
    Derived from the state only, so every replay records the same end."""
    end = state.last_ms + window_ms
    cap = max_duration_ms(state)
    if cap is not None and state.answered is not None:    # a cap implies an answer
        end = min(end, state.answered.ts + cap)
        end = max(end, state.answered.ts)
    return end


def is_over(state: CallState) -> bool:
    return _end_of(state) is not None


def rows_ready(state: CallState) -> bool:
    """``finish(state, 0)`` would give rows: the call is over and its invite is
    known.  Processors ask this after every event; it looks at a few fields
    and builds nothing, where ``finish`` is the work of making the rows."""
    return state.invite is not None and _end_of(state) is not None


def _end_of(state: CallState):
    """(end fact or Final) that ended the call, or None while it is not over."""
    answered = state.answered
    if answered is None:
        return state.failed
    answer_ms = answered.ts
    for end in state.ends:
        if (end.at or end.ts) >= answer_ms:          # End.seen
            return end
    return None


# --- finish ------------------------------------------------------------------------

def disposition_for(code: int, *, rang: bool, cancelled: bool) -> Disposition:
    """RFC 3261 final code -> disposition.  ``rang``: a provisional > 100 came;
    ``cancelled``: a 487 follows a CANCEL by the caller (or a teardown, or the
    proxy cancelling the other forks) rather than the proxy's Timer C."""
    if 200 <= code < 300:
        return "answered"
    if code in (486, 600):
        return "busy"
    if code == 402:
        return "rejected_credit"
    if code in (408, 480) and rang:
        return "no_answer"
    if code == 487:
        return "cancelled" if cancelled else "no_answer"
    return "failed"


def _domain_of(account: str, uri: str) -> str:
    if "@" in account:
        return account.rsplit("@", 1)[1].lower()
    text = uri.strip()
    if "<" in text:
        text = text[text.index("<") + 1:].split(">", 1)[0]
    _, _, rest = text.partition(":")
    rest = rest or text
    host = rest.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    for stop in (":", ";", "?", ">"):
        host = host.split(stop, 1)[0]
    return host.lower()


def finish(state: CallState, now_ms: int, silence: bool = False) -> list[CdrLeg] | None:
    """The CDR rows of a call that is over, else None.

    ``silence=True`` closes a call that is not over (the processor decided it
    went silent): it is recorded as ending at ``now_ms``, which the caller takes
    from ``silence_end_ms(state, window)`` so that the rows stay a function of
    the events.  ``now_ms`` is not used otherwise.  A call that is over is
    recorded as such even when asked to close it for silence."""
    end_fact = _end_of(state)
    if end_fact is not None and state.invite is None and not silence:
        return None                      # over, but the invite has not arrived (yet)
    if end_fact is None and not silence:
        return None
    if end_fact is None and state.invite is None and state.answered is None \
            and state.failed is None:
        # a silence close of nothing but stray events (e.g. a late duplicate
        # of a finished call): no call to record
        return None

    invite = state.invite
    answered = state.answered
    failed = state.failed
    legs = state.legs
    teardown = None
    for end in state.ends:
        if end.kind == "teardown" and (failed is None or end.ts <= failed.ts):
            teardown = end
            break
    first_progress = None                # the earliest ringing of any leg
    for leg in legs:
        if leg.progress is not None and (first_progress is None or leg.progress.ts < first_progress):
            first_progress = leg.progress.ts

    # call outcome
    if answered is not None:
        call_code, call_reason, call_disp = answered.code, answered.reason, "answered"
        to_tag = answered.to_tag
    elif failed is not None:
        cancelled = state.cancel is not None or teardown is not None
        call_code, call_reason = failed.code, failed.reason
        call_disp = disposition_for(failed.code, rang=first_progress is not None, cancelled=cancelled)
        to_tag = failed.to_tag
    else:                                # silence close of a call that never got a final
        call_code, call_reason, call_disp, to_tag = 0, "", "failed", ""

    # end and who ended it
    if end_fact is None:
        end_ms = now_ms
        hangup_by, hangup_reason = "silence", SILENCE_REASON
    elif isinstance(end_fact, End):
        end_ms = end_fact.ts
        if end_fact.kind == "bye":
            hangup_by = end_fact.by if end_fact.by in ("caller", "callee") else "teardown"
        else:
            hangup_by = end_fact.kind          # timeout, teardown, media_timeout, session_timer
        hangup_reason = end_fact.reason
    else:                                # Final: an unanswered call
        end_ms = end_fact.ts
        hangup_by, hangup_reason = ("teardown", teardown.reason) if teardown is not None else ("none", "")
    if answered is not None:
        end_ms = max(end_ms, answered.ts)

    setup_ms = invite.ts if invite is not None else state.first_ms
    first_reply = first_progress if first_progress is not None else (
        answered.ts if answered is not None else failed.ts if failed is not None else 0)
    pdd_ms = max(0, first_reply - setup_ms) if first_reply else 0

    if invite is not None:
        from_tag, proxy = invite.from_tag, invite.proxy
    elif state.seen is not None:
        from_tag, proxy = state.seen.from_tag, state.seen.proxy
    else:
        from_tag, proxy = "", ""
    call: dict[str, Any] = {
        "cdr_id": cdr_id_for(state.call_id, from_tag),
        "call_id": state.call_id, "from_tag": from_tag, "to_tag": to_tag,
        "setup_ms": setup_ms, "pdd_ms": pdd_ms,
        "call_sip_code": call_code, "call_sip_reason": call_reason, "call_disposition": call_disp,
        "hangup_by": hangup_by, "hangup_reason": hangup_reason, "proxy": proxy,
    }
    if invite is not None:               # else the fields' defaults: ""
        call.update(account=invite.account, caller_uri=invite.caller_uri, caller_ip=invite.caller_ip,
                    caller_user_agent=invite.user_agent, dialled=invite.dialled,
                    callee_uri=invite.callee_uri, domain=_domain_of(invite.account, invite.dialled))

    if answered is None:
        indexes = [leg.index for leg in legs] or [0]
    else:
        indexes = sorted({leg.index for leg in legs} | {answered.leg})
    others_cancelled = answered is not None or state.cancel is not None or teardown is not None
    if not others_cancelled:
        for leg in legs:
            if leg.failed is not None and leg.failed.code >= 600:
                others_cancelled = True
                break
    media = _media_by_leg(state) if state.media else None
    count = len(indexes)
    rows = []
    for index in indexes:
        pos = _leg_pos(legs, index)
        leg = legs[pos] if pos >= 0 else LegState(index)
        routed = leg.routed
        if routed is not None:
            fields: dict[str, Any] = {
                "leg": index, "parent_leg": routed.parent, "leg_cause": routed.cause, "legs": count,
                "target": routed.target, "destination": routed.destination, "gateway": routed.gateway}
        else:
            fields = {"leg": index, "legs": count}       # parent -1, cause "initial", no target
        if leg.progress is not None:
            fields["ringing_ms"] = leg.progress.ts
        if answered is not None and index == answered.leg:
            duration = end_ms - answered.ts
            fields.update(answer_ms=answered.ts, end_ms=end_ms, duration_ms=duration,
                          billable_s=-(-duration // 1000), sip_code=answered.code,
                          sip_reason=answered.reason, disposition="answered",
                          callee_user_agent=answered.callee_user_agent)
        elif leg.failed is not None:
            fields.update(end_ms=leg.failed.ts, sip_code=leg.failed.code, sip_reason=leg.failed.reason,
                          disposition=disposition_for(leg.failed.code, rang=leg.progress is not None,
                                                      cancelled=others_cancelled))
        elif answered is not None:
            # a fork the answer made the proxy cancel, with no final of its own seen
            fields.update(end_ms=max(answered.ts, setup_ms), sip_code=0, disposition="cancelled")
        else:
            # no outcome of its own: the call's (a refusal before routing, or a
            # leg whose leg.failed came after the call's final and was not kept)
            fields.update(end_ms=end_ms, sip_code=call_code, sip_reason=call_reason,
                          disposition=call_disp)
        if media is not None and index in media:
            fields.update(_media_columns(media[index]))
        rows.append(CdrLeg(**call, **fields))
    return rows


def _media_by_leg(state: CallState) -> dict[int, Media]:
    """Each leg's latest media.stats; one without a leg belongs to the answered leg."""
    by_leg = {fact.leg: fact for fact in state.media if fact.leg != NO_LEG}
    unnamed = next((fact for fact in state.media if fact.leg == NO_LEG), None)
    if unnamed is not None and state.answered is not None:
        index = state.answered.leg
        by_leg[index] = _latest(by_leg.get(index), unnamed)
    return by_leg


def _media_columns(fact: Media | None) -> dict[str, Any]:
    if fact is None:
        return {}
    columns: dict[str, Any] = {"media_relay": fact.relay,
                               "last_media_ms": max(fact.caller.last_packet_ms, fact.callee.last_packet_ms)}
    for party, flow in (("caller", fact.caller), ("callee", fact.callee)):
        columns.update({f"{party}_rtp_packets": flow.packets, f"{party}_rtp_bytes": flow.bytes,
                        f"{party}_rtp_errors": flow.errors, f"{party}_rtp_lost": flow.lost,
                        f"{party}_rtp_jitter_ms": flow.jitter_ms, f"{party}_rtp_mos_x10": flow.mos_x10})
    return columns
