"""The live calls of one worker, as plain rows: what `sipledger calls` lists.

Why here, without I/O: the worker's housekeeping publishes these rows
(proxy/runtime/livecalls.py) and the API reads them; building them is a walk
over the core's two tables, testable on a fake core:

* ``core.calls``: initial INVITEs in progress.  One not yet answered nor
  replied is a ringing call, state ``early`` (``ending`` once cancelled,
  until its final response).
* ``core.dialogs``: the billed dialog of each answered call (an extra fork's
  dialog is not a call), ``confirmed`` or ``ending`` (the proxy sent BYE both
  ways and waits for the answers).

The facts that do not change during a call (start, account, gateway, the
parties' URIs) are taken once, at the answer (``call_facts``), so a snapshot
of thousands of calls parses nothing.  What a caller wrote (Call-ID, URIs) is
cut to ``MAX_TEXT`` characters: 5000 rows stay a file of a few MB whatever
the headers' size (a Call-ID longer than that cannot be hung up by id anyway,
api/calls.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ..sip.uri import UriError, parse_name_addr
from .dialogs import DialogState

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Core
    from .forwarding import ProxyCall

__all__ = ["CallFacts", "call_facts", "live_calls", "FIELDS"]

# the keys of every row, in the order `sipledger calls` prints them
FIELDS = ("call_id", "state", "caller", "callee", "account", "gateway", "started_ms",
          "answered_ms", "max_duration_s", "worker")


MAX_TEXT = 255


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


class CallFacts(NamedTuple):
    started_ms: int
    account: str
    gateway: str
    caller: str
    callee: str


def _uri(value: str | None) -> str:
    try:
        return _bounded(parse_name_addr(value or "").uri)
    except (UriError, ValueError):
        return ""


def call_facts(call: "ProxyCall", gateway: str) -> CallFacts:
    request = call.request
    return CallFacts(call.started_ms, call.account or "", gateway,
                     _uri(request.get("from")), _uri(request.get("to")))


def _row(call_id: str, state: str, facts: CallFacts, answered_ms: int, max_duration_s: int,
         worker: int) -> dict[str, Any]:
    return {"call_id": _bounded(call_id), "state": state, "caller": facts.caller, "callee": facts.callee,
            "account": facts.account, "gateway": facts.gateway, "started_ms": facts.started_ms,
            "answered_ms": answered_ms, "max_duration_s": max_duration_s, "worker": worker}


def live_calls(core: "Core", worker: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """At most ``limit`` rows (answered calls first, then ringing ones, each
    oldest first) and how many calls there are in all."""
    rows: list[dict[str, Any]] = []
    total = 0
    for dialogs in core.dialogs.by_call.values():
        for dialog in dialogs:
            if not dialog.billed or dialog.state is DialogState.ENDED:
                continue
            total += 1
            if len(rows) < limit:
                facts = dialog.facts or CallFacts(dialog.answered_ms, "", "", "", "")
                rows.append(_row(dialog.call_id, dialog.state.value, facts, dialog.answered_ms,
                                 dialog.max_duration_s, worker))
    default_max = core.settings.max_dialog_seconds
    for call_id, call in core.calls.items():
        if call.answered or call.replied or not call.track:
            continue
        total += 1
        if len(rows) < limit:
            gateway = call.branches[-1].gateway if call.branches else ""
            rows.append(_row(call_id, "ending" if call.cancelled else "early", call_facts(call, gateway), 0,
                             call.max_duration_s or default_max, worker))
    return rows, total
