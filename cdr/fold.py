"""One call's CDR decisions, event by event: the one fold the live processor
(cdr/processor.py) and the archive rebuild (cdr/archive/rebuild.py) share.

Sans-I/O and pure: ``advance`` takes where a call stands (its ``CallState``,
whether it is over, the silence close time) and one event, and says what
happens; it reads no clock and no table.  The processor turns a transition
into table writes and published rows; the rebuild (``rebuild_call``) just
walks a call's archived events through it.

The rules on top of the order-independent state fold (proxy/contract/callfold.py):

* an event more than the silence window (event time) after the call's
  silence deadline first closes the call for silence and is then dropped;
* once a call is over, only a ``media.stats`` still counts (the rows are made
  again with the media) and only while the final state is kept: an answered
  call keeps it (``kept_after_end``), any other shrinks to a marker;
* a call that ends with no rows (stray events only) records nothing.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from proxy.contract import events as ev
from proxy.contract.callfold import (
    CallState,
    apply,
    finish,
    is_call_event,
    live,
    new_state,
    rows_ready,
    silence_deadline_ms,
    silence_end_ms,
)
from proxy.contract.cdr import CdrLeg

__all__ = ["Transition", "advance", "closed_rows", "kept_after_end", "rebuild_call",
           "IGNORED", "TOO_LATE", "NO_CHANGE", "LIVE", "ENDED", "SILENT", "AGAIN"]

# what an event did (the names are the processor's counters)
IGNORED = "after_finish"        # a late duplicate of a finished call
TOO_LATE = "media_too_late"     # media.stats after the final state was given up
NO_CHANGE = "no_change"         # a duplicate: the state is the very same object
LIVE = "live"                   # the call goes on with a new state
ENDED = "ended"                 # the event ended the call: rows
SILENT = "silent"               # the call went silent before this event: closed, event dropped
AGAIN = "media_after_end"       # late media of a finished call: its rows again


class Transition(NamedTuple):
    kind: str
    state: CallState | None = None
    close_ms: int = 0                   # a silence close: the end given to finish()
    rows: list[CdrLeg] | None = None    # ENDED / SILENT / AGAIN: the call's rows ([] = nothing to record)


def closed_rows(state: CallState, close_ms: int) -> list[CdrLeg]:
    """The rows of a finished call: over on its own (``close_ms`` 0) or closed
    for silence at ``close_ms``.  A pure function: the same bytes every time."""
    if close_ms:
        return finish(state, close_ms, silence=True) or []
    return finish(state, 0) or []


def kept_after_end(state: CallState | None) -> CallState | None:
    """What a finished call keeps once its rows are out: an answered call its
    final state (a media.stats follows the end), any other nothing (a marker)."""
    return state if state is not None and state.answered is not None else None


def advance(state: CallState | None, done: bool, close_ms: int, event: ev.CallEvent,
            window_ms: int) -> Transition:
    """Fold one call event (``is_call_event``) into a call that stands at
    (``state``, ``done``, ``close_ms``); ``state`` None and not ``done``: unseen call."""
    if done:
        if not isinstance(event, ev.MediaStats):
            return Transition(IGNORED)
        if state is None:
            return Transition(TOO_LATE)
        new = apply(state, event)
        if new is state:
            return Transition(NO_CHANGE)
        return Transition(AGAIN, new, close_ms, closed_rows(new, close_ms))
    if state is None:
        current, fresh = new_state(event.call_id), True
    else:
        current, fresh = live(state), False
        if event.ts_ms > silence_deadline_ms(current, window_ms):
            # closed as the silence timer would have closed it before this event;
            # then the event meets the closed call as it would have after the
            # timer: a media.stats for an answered call still counts (AGAIN).
            # Otherwise a redelivered copy would count where the first did not,
            # and the rebuild (one copy per event id) would disagree with live.
            end = silence_end_ms(current, window_ms)
            if isinstance(event, ev.MediaStats) and kept_after_end(current) is not None:
                current = apply(current, event)
            return Transition(SILENT, current, end, closed_rows(current, end))
    new = apply(current, event)
    if new is current and not fresh:
        return Transition(NO_CHANGE)
    if not rows_ready(new):             # the common case, asked of every event: cheap
        return Transition(LIVE, new)
    return Transition(ENDED, new, 0, closed_rows(new, 0))


def rebuild_call(events: Iterable[ev.CallEvent], window_ms: int, now_ms: int) -> list[CdrLeg] | None:
    """A call's rows from its events in the order the processor would read them
    (the archive's: time, then event id); None while the call is still live at
    ``now_ms`` (not over and not silent yet), [] when there is nothing to record.

    Same transitions as the live path; what the live path decides by the wall
    clock is decided by event time here: a call not over is closed for silence
    once ``now_ms`` is past its deadline, and a finished call's kept state takes
    late media whenever it comes (live: within ``MEDIA_GRACE_MS``)."""
    state: CallState | None = None
    done, close_ms = False, 0
    rows: list[CdrLeg] | None = None
    for event in events:
        if not is_call_event(event):
            continue
        step = advance(state, done, close_ms, event, window_ms)
        if step.kind == LIVE:
            state = step.state
        elif step.kind in (ENDED, SILENT, AGAIN):
            rows, close_ms = step.rows, step.close_ms
            state = kept_after_end(step.state) if rows else None
            done = True
    if not done:
        if state is None:
            return []           # no call event at all (e.g. registration.dropped): nothing to record
        if now_ms > silence_deadline_ms(state, window_ms):
            rows = closed_rows(state, silence_end_ms(state, window_ms))
    return rows
