"""CDRs rebuilt from the archive with the current fold (docs/operations.md).

``rebuild(...)`` is the one service behind ``sipledger cdr rebuild`` and
``POST /v1/cdrs/rebuild``.  For each call of the range it reads the call's
archived ``sip.events`` (one copy per event id, by time then id), folds them
with the live processor's fold (cdr/fold.py ``rebuild_call``) and compares
the legs with what the ``cdr`` table holds:

* added   — the table has no leg of the call;
* changed — some leg differs (the differing fields are listed per leg), or
  the table has legs the fold does not make;
* removed — the table has a call (leg 0's setup in the range) the archive
  does not make at all (reported, never deleted: a CDR whose events predate
  the archive looks like this).

Unless ``dry_run`` the legs of added and changed calls are written through
the normal idempotent path (``CdrStore.insert_legs``: a newer version of
the same (cdr_id, leg)); unchanged calls are not written at all, so a
rebuild of an unchanged period leaves the table byte for byte as it was.

The range rule: a call belongs to the range of its *first* archived event
(normally its invite.received); all its events are read, also those after
the range end (up to ``span_ms`` later, the longest a call can last).  A call
still live at ``now_ms`` (not over, not silent yet) is skipped and counted.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from proxy.contract import events as ev
from proxy.contract.cdr import CdrLeg, cdr_id_for
from proxy.infra import clock
from proxy.infra.config import Config

from ..fold import rebuild_call
from ..store import rows as cdr_rows
from ..store.queries import CdrStore
from .store import ArchiveStore

__all__ = ["CallDiff", "RebuildLimits", "RebuildReport", "rebuild", "rebuild_cdrs", "stored_legs"]

SLICE_MS = 3_600_000        # the range is rebuilt an hour of first events at a time
CALL_CHUNK = 5000           # calls per read of their events
MAX_DIFFS = 1000            # differences kept in the report (all are counted)


@dataclass
class CallDiff:
    cdr_id: str
    call_id: str
    change: str                                        # added | changed | removed
    legs: dict[int, dict[str, list[Any]]] = field(default_factory=dict)   # changed: leg -> field -> [stored, rebuilt]

    def as_dict(self) -> dict[str, Any]:
        return {"cdr_id": self.cdr_id, "call_id": self.call_id, "change": self.change,
                "legs": {str(leg): fields for leg, fields in sorted(self.legs.items())}}


@dataclass
class RebuildReport:
    from_ms: int
    to_ms: int
    dry_run: bool
    calls: int = 0              # calls folded from the archive
    live: int = 0               # skipped: still live
    unchanged: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    legs_written: int = 0
    events: int = 0             # archived events folded
    unreadable: int = 0         # archived events this version cannot read (skipped)
    seconds: float = 0.0
    diffs: list[CallDiff] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "diffs"}
        out["diffs"] = [d.as_dict() for d in self.diffs]
        return out

    def _note(self, diff: CallDiff) -> None:
        if len(self.diffs) < MAX_DIFFS:
            self.diffs.append(diff)


@dataclass(frozen=True)
class RebuildLimits:
    """What the fold needs from the config: the silence window and how long a
    call can last (its events are read that far past the range end)."""
    window_ms: int = 4 * 3_600_000
    span_ms: int = 3 * 3_600_000 + 4 * 3_600_000

    @classmethod
    def of(cls, config: Config) -> "RebuildLimits":
        window = config.cdr.silence_ms
        return cls(window_ms=window, span_ms=config.proxy.max_dialog_seconds * 1000 + window)


def rebuild_cdrs(cdrs: CdrStore, limits: RebuildLimits, from_ms: int, to_ms: int, *,
                 dry_run: bool = False, now_ms: int | None = None) -> RebuildReport:
    """The service behind the CLI and the REST route: the archive on the same back end.
    ``now_ms`` (default: the clock) decides which calls are still live."""
    if to_ms <= from_ms:
        raise ValueError("--to must be after --from")
    return rebuild(ArchiveStore(cdrs.backend), cdrs, from_ms, to_ms, window_ms=limits.window_ms,
                   span_ms=limits.span_ms, now_ms=clock.now_ms() if now_ms is None else now_ms,
                   dry_run=dry_run)


def stored_legs(cdrs: CdrStore, cdr_ids: Sequence[str]) -> dict[str, dict[int, CdrLeg]]:
    """The newest stored copy of every leg of those CDRs."""
    if not cdr_ids:
        return {}
    rows = cdrs.backend.query_dicts(
        f"SELECT {', '.join(cdr_rows.LEG_FIELDS)} FROM cdr WHERE cdr_id IN {{ids}} "
        "ORDER BY cdr_id, leg, version DESC LIMIT 1 BY cdr_id, leg", {"ids": list(cdr_ids)})
    found: dict[str, dict[int, CdrLeg]] = {}
    for row in rows:
        leg = msgspec.convert(row, CdrLeg)
        found.setdefault(leg.cdr_id, {})[leg.leg] = leg
    return found


def _leg_changes(stored: CdrLeg | None, rebuilt: CdrLeg | None) -> dict[str, list[Any]]:
    old = msgspec.structs.asdict(stored) if stored is not None else {}
    new = msgspec.structs.asdict(rebuilt) if rebuilt is not None else {}
    return {name: [old.get(name), new.get(name)] for name in cdr_rows.LEG_FIELDS
            if old.get(name) != new.get(name)}


def _read(payloads: list[bytes], report: RebuildReport) -> list[ev.CallEvent]:
    events = []
    for payload in payloads:
        try:
            events.append(ev.read(payload))
        except ev.Unreadable:
            report.unreadable += 1
    report.events += len(events)
    return events


def rebuild(archive: ArchiveStore, cdrs: CdrStore, from_ms: int, to_ms: int, *, window_ms: int,
            span_ms: int, now_ms: int, dry_run: bool = False, version_ms: int | None = None) -> RebuildReport:
    """Rebuild the CDRs of the calls whose first event is in [from_ms, to_ms)."""
    started = time.perf_counter()
    report = RebuildReport(from_ms, to_ms, dry_run)
    made: set[str] = set()          # cdr ids the archive makes (or will: live calls)
    span = archive.time_span(from_ms, to_ms)        # only the hours the archive has events in
    first, last = span if span is not None else (to_ms, to_ms)
    for start in range(max(from_ms, first - first % SLICE_MS), min(to_ms, last + 1), SLICE_MS):
        end = min(to_ms, start + SLICE_MS)
        calls = archive.first_calls(start, end, span_ms)
        for i in range(0, len(calls), CALL_CHUNK):
            chunk = calls[i:i + CALL_CHUNK]
            rebuilt: dict[str, tuple[str, list[CdrLeg]]] = {}
            for call_id, payloads in archive.call_events(chunk, start, end + span_ms):
                events = _read(payloads, report)
                if not events:
                    continue
                rows = rebuild_call(events, window_ms, now_ms)
                if rows is None:
                    report.live += 1
                    made.add(cdr_id_for(call_id, events[0].from_tag))
                elif rows:
                    report.calls += 1
                    made.add(rows[0].cdr_id)
                    rebuilt[rows[0].cdr_id] = (call_id, rows)
            _compare_and_write(cdrs, rebuilt, report, dry_run, version_ms)
    _removed(cdrs, from_ms, to_ms, made, report)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _compare_and_write(cdrs: CdrStore, rebuilt: dict[str, tuple[str, list[CdrLeg]]],
                       report: RebuildReport, dry_run: bool, version_ms: int | None) -> None:
    stored = stored_legs(cdrs, list(rebuilt))
    write: list[CdrLeg] = []
    for cdr_id, (call_id, rows) in rebuilt.items():
        have = stored.get(cdr_id)
        if not have:
            report.added += 1
            report._note(CallDiff(cdr_id, call_id, "added"))
            write.extend(rows)
            continue
        legs = {row.leg: row for row in rows}
        changes = {leg: fields for leg in sorted(set(legs) | set(have))
                   if (fields := _leg_changes(have.get(leg), legs.get(leg)))}
        if not changes:
            report.unchanged += 1
            continue
        report.changed += 1
        report._note(CallDiff(cdr_id, call_id, "changed", changes))
        write.extend(rows)
    if write and not dry_run:
        report.legs_written += cdrs.insert_legs(write, version_ms)


def _removed(cdrs: CdrStore, from_ms: int, to_ms: int, made: set[str], report: RebuildReport) -> None:
    rows = cdrs.backend.query(
        "SELECT DISTINCT cdr_id FROM cdr_calls WHERE setup_ms >= {from_ms} AND setup_ms < {to_ms}",
        {"from_ms": from_ms, "to_ms": to_ms})
    for (cdr_id,) in rows:
        if cdr_id not in made:
            report.removed += 1
            report._note(CallDiff(cdr_id, "", "removed"))
