"""Reading CDRs: call summaries, one call with its legs, and traffic statistics.

Every query deduplicates legs (``FINAL``, or the newest ``version`` per
(cdr_id, leg) with ``LIMIT 1 BY``), so a leg inserted twice shows once.  Every value a caller supplies is a bound
parameter (``sqlbind``): the SQL text is fixed fragments only.

A *call* (one CDR) is summarised from its legs (docs/api.md):

* identity — account, caller, dialled number, domain, setup time — from leg 0;
* outcome — disposition, SIP code and reason, who hung up — is the call's
  (``call_*``/``hangup_*``, the same on every leg: the processor decides it);
* gateway, target, answer time, duration, billable seconds and the media
  columns come from the *deciding leg*: the answered leg if any leg was
  answered, else the highest-numbered leg;
* ``end_ms`` is the latest end of any leg, ``ringing_ms`` the earliest
  ringing of any leg, ``pdd_ms`` (post-dial delay as the caller saw it) the
  time from setup to that first ringing, or, when no leg rang, to the final
  response of the deciding leg.

A call is listed by its leg 0: calls without a stored leg 0 do not show.
Pages are cut on ``cdr_calls``, a time-ordered index of leg 0 rows that a
materialized view fills on every insert into ``cdr``, or, when they filter on
the outcome, on ``cdr_call``: the summary of every call (one row, sorted by
setup time) that ``insert_legs`` writes next to its legs (migration 6,
``rows.call_row``), which statistics count too.  A page's calls are then
summarised from their legs here (``_calls_sql``), the definition the stored
summary follows.
"""
from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import msgspec
import pyarrow as pa

from proxy.contract.cdr import CdrLeg
from proxy.infra import clock
from proxy.infra.clickhouse.backend import Backend

from . import rollup
from . import rows as rows_mod

Period = Literal["5min", "hour", "day", "month"]
GroupBy = Literal["none", "gateway", "prefix", "account"]

# A call's later legs start after leg 0, during call setup: an upper time
# bound on leg 0's setup is widened by this much for the other legs.
LEG_SETUP_SLACK_MS = 3_600_000
CURSOR_VERSION = 1
DAY_MS = rollup.DAY_MS
SUMMARY_LOOKUP_CHUNK = 1000         # calls whose stored legs one query reads back
PAGE_WINDOW_MS = 3_600_000          # a page's first time window (then 16 h, 11 days, 171 days, ...)

class CursorError(ValueError):
    pass


@dataclass(frozen=True)
class Cursor:
    """Position after the last call of a page (calls sort by setup_ms, cdr_id, descending)."""
    setup_ms: int
    cdr_id: str

    def encode(self) -> str:
        raw = msgspec.json.encode([CURSOR_VERSION, self.setup_ms, self.cdr_id])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            version, setup_ms, cdr_id = msgspec.json.decode(raw, type=tuple[int, int, str])
        except (binascii.Error, ValueError, msgspec.DecodeError, TypeError):
            raise CursorError("not a cursor returned by this API") from None
        if version != CURSOR_VERSION or setup_ms < 0 or not cdr_id:
            raise CursorError("not a cursor returned by this API")
        return cls(setup_ms, cdr_id)


@dataclass(frozen=True)
class CdrFilter:
    account: str | None = None
    caller: str | None = None           # prefix of caller_number
    caller_ip: str | None = None        # exact
    callee: str | None = None           # prefix of dialled_number
    from_ms: int | None = None          # setup_ms >= from_ms
    to_ms: int | None = None            # setup_ms < to_ms
    dispositions: tuple[str, ...] = ()
    gateway: str | None = None          # any leg routed to this gateway
    min_duration_ms: int | None = None  # duration (answered leg) >= this

    @property
    def has_outcome_filters(self) -> bool:
        return bool(self.dispositions) or self.gateway is not None or self.min_duration_ms is not None


def _strip_plus(prefix: str) -> str:
    return prefix[1:] if prefix.startswith("+") else prefix


class _Where:
    """AND-ed SQL fragments (fixed text) and the values they bind."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: dict[str, Any] = {}

    def add(self, fragment: str, **params: Any) -> None:
        self.parts.append(fragment)
        self.params.update(params)

    def sql(self) -> str:
        return " AND ".join(f"({part})" for part in self.parts) if self.parts else "1"


def _identity_where(f: CdrFilter, where: _Where, *, p: str = "") -> None:
    """Filters that hold for every leg of a call alike (account, caller, dialled).
    ``p`` prefixes the parameter names so two WHEREs can share one query."""
    if f.account is not None:
        where.add(f"account = {{{p}account}}", **{f"{p}account": f.account})
    if f.caller:
        prefix = _strip_plus(f.caller)
        where.add(f"substring(caller_number, 1, {{{p}caller_len}}) = {{{p}caller}}",
                  **{f"{p}caller": prefix, f"{p}caller_len": len(prefix.encode())})
    if f.caller_ip is not None:
        where.add(f"caller_ip = {{{p}caller_ip}}", **{f"{p}caller_ip": f.caller_ip})
    if f.callee:
        prefix = _strip_plus(f.callee)
        where.add(f"substring(dialled_number, 1, {{{p}callee_len}}) = {{{p}callee}}",
                  **{f"{p}callee": prefix, f"{p}callee_len": len(prefix.encode())})


def _time_where(from_ms: int | None, to_ms: int | None, where: _Where, *, p: str = "") -> None:
    """setup_ms in [from_ms, to_ms), with the same bounds on ``setup`` (seconds)
    so that ClickHouse skips partitions and parts outside the range."""
    if from_ms is not None:
        where.add(f"setup >= toDateTime({{{p}from_s}}) AND setup_ms >= {{{p}from_ms}}",
                  **{f"{p}from_s": from_ms // 1000, f"{p}from_ms": from_ms})
    if to_ms is not None:
        where.add(f"setup <= toDateTime({{{p}to_s}}) AND setup_ms < {{{p}to_ms}}",
                  **{f"{p}to_s": to_ms // 1000, f"{p}to_ms": to_ms})


def _cursor_where(cursor: Cursor, where: _Where, *, p: str = "") -> None:
    # the redundant first term lets ClickHouse prune on the sorting key
    where.add(f"setup_ms <= {{{p}cur_setup}} AND (setup_ms < {{{p}cur_setup}} "
              f"OR (setup_ms = {{{p}cur_setup}} AND cdr_id < {{{p}cur_id}}))",
              **{f"{p}cur_setup": cursor.setup_ms, f"{p}cur_id": cursor.cdr_id})


# The legs subquery renames every column l_<name> so that the call-level
# aggregates can take the natural names without clashing with their inputs.
_LEG_COLUMNS = rows_mod.COLUMNS
_LEGS_SELECT = ", ".join(f"{name} AS l_{name}" for name in _LEG_COLUMNS) + \
    ", if(disposition = 'answered', 1000000, 0) + leg AS l_rank"

_FROM_LEG0 = ("call_id", "account", "caller_uri", "caller_number", "caller_ip", "caller_user_agent",
              "dialled", "dialled_number", "callee_uri", "domain", "proxy", "from_tag", "setup_ms",
              "hangup_by", "hangup_reason")
# the call's outcome, identical on every leg (the processor decides it)
_CALL_OUTCOME = (("call_sip_code", "sip_code"), ("call_sip_reason", "sip_reason"),
                 ("call_disposition", "disposition"))
_FROM_DECIDING = ("to_tag", "target", "destination", "gateway", "callee_user_agent", "answer_ms",
                  "duration_ms", "billable_s") + rows_mod.MEDIA_COLUMNS
CALL_FIELDS = (("cdr_id", "legs") + _FROM_LEG0 + tuple(name for _, name in _CALL_OUTCOME)
               + _FROM_DECIDING + ("ringing_ms", "end_ms", "pdd_ms", "gateways"))

def _deciding(name: str) -> str:
    """The deciding leg's value.  A Nullable value goes through a tuple: an
    aggregate skips NULLs, and would take another leg's value instead."""
    if name in rows_mod.NULLABLE_COLUMNS:
        return f"tupleElement(argMax(tuple(l_{name}), l_rank), 1) AS {name}"
    return f"argMax(l_{name}, l_rank) AS {name}"


_CALL_AGGREGATES = ", ".join(
    ["l_cdr_id AS cdr_id", "count() AS legs"]
    + [f"argMin(l_{name}, l_leg) AS {name}" for name in _FROM_LEG0]
    + [f"argMin(l_{column}, l_leg) AS {name}" for column, name in _CALL_OUTCOME]
    + [_deciding(name) for name in _FROM_DECIDING]
    + ["minIf(l_ringing_ms, l_ringing_ms > 0) AS ringing_ms",
       "max(l_end_ms) AS end_ms",
       "if(ringing_ms > 0, greatest(toInt64(ringing_ms) - toInt64(setup_ms), 0), "
       "if(argMax(l_pdd_ms, l_rank) > 0, "
       "greatest(toInt64(argMax(l_setup_ms + l_pdd_ms, l_rank)) - toInt64(setup_ms), 0), 0)) AS pdd_ms",
       "groupUniqArray(l_gateway) AS gateways"])


def _calls_sql(legs_where: _Where, match: str | None = None, *, few: bool = False) -> str:
    """Call summaries from the legs ``legs_where`` selects, restricted to the
    cdr_ids ``match`` names (``"= {placeholder}"`` or ``"IN (subquery)"``).

    Duplicated legs are reduced to their newest copy (highest ``version``, as
    ReplacingMergeTree keeps): with ``FINAL`` for scans (statistics), with
    ``LIMIT 1 BY`` for a few calls (a page, one call), where it reads far less."""
    restrict = f"cdr_id {match} AND " if match else ""
    if few:
        legs = (f"SELECT {_LEGS_SELECT} FROM cdr WHERE {restrict}{legs_where.sql()} "
                f"ORDER BY cdr_id, leg, version DESC LIMIT 1 BY cdr_id, leg")
    else:
        legs = f"SELECT {_LEGS_SELECT} FROM cdr FINAL WHERE {restrict}{legs_where.sql()}"
    return f"SELECT {_CALL_AGGREGATES} FROM ({legs}) GROUP BY l_cdr_id"


def _outcome_where(f: CdrFilter, where: _Where) -> None:
    if f.dispositions:
        where.add("disposition IN {dispositions}", dispositions=list(f.dispositions))
    if f.gateway is not None:
        where.add("has(gateways, {gateway})", gateway=f.gateway)
    if f.min_duration_ms is not None:
        where.add("duration_ms >= {min_duration_ms}", min_duration_ms=f.min_duration_ms)


def iso_ms(ms: int) -> str | None:
    """Epoch ms → ISO 8601 UTC with milliseconds; None for 0 ("did not happen")."""
    if not ms:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _call_dict(row: dict[str, Any]) -> dict[str, Any]:
    call = {name: row[name] for name in CALL_FIELDS}
    call["gateways"] = sorted(g for g in call["gateways"] if g)
    for name in ("setup", "ringing", "answer", "end"):
        call[f"{name}_at"] = iso_ms(call[f"{name}_ms"])
    return call


def _leg_dict(row: dict[str, Any]) -> dict[str, Any]:
    leg = {name: row[name] for name in rows_mod.LEG_FIELDS + ("caller_number", "dialled_number")}
    for name in ("setup", "ringing", "answer", "end"):
        leg[f"{name}_at"] = iso_ms(leg[f"{name}_ms"])
    return leg


def newest_copies(legs: Sequence[CdrLeg]) -> Sequence[CdrLeg]:
    """``legs`` with only the last copy of each (cdr_id, leg): a batch can hold a
    CDR and its later re-publication (late media), and both would get the one
    version of the insert.  Neither chdb (without optimize_on_insert) nor an
    18.16 server deduplicates a block on the way in, and between equal versions
    ReplacingMergeTree keeps an arbitrary one: the CDR without its media."""
    last = {(leg.cdr_id, leg.leg): n for n, leg in enumerate(legs)}
    if len(last) == len(legs):
        return legs
    return [legs[n] for n in sorted(last.values())]


@dataclass
class CdrStore:
    """CDR reads and writes over one back end (chdb or a server)."""
    backend: Backend
    inserted_rows: int = field(default=0)
    # statistics read counted days (rollup.py) where they can; off: every call
    # from cdr_call (the definition the counts must equal: tests, the bench)
    use_counts: bool = True

    # -- writes ----------------------------------------------------------------
    def insert_legs(self, legs: Sequence[CdrLeg], version_ms: int | None = None) -> int:
        """Store legs (``version``: now unless given), then the summaries of
        their calls (``cdr_call``).  A failure in between leaves legs whose
        summary is older: the caller retries the whole insert (the sink does),
        both are idempotent."""
        if not legs:
            return 0
        given = len(legs)
        legs = newest_copies(legs)
        version = clock.now_ms() if version_ms is None else version_ms
        columns = rows_mod.to_columns(legs, version)
        count = self.backend.insert(rows_mod.TABLE, columns)
        self._summarise(legs, columns, version)
        self.inserted_rows += count
        # a copy dropped for its later twin is stored as well as a duplicate
        # written and collapsed at merges: the caller counts every leg it gave
        return count + given - len(legs)

    def _summarise(self, legs: Sequence[CdrLeg], columns: dict[str, list], version: int) -> None:
        """Write ``cdr_call`` rows for the calls of ``legs``.  A one-leg call is
        its leg (``rows.single_leg_calls``, from the insert's columns); a call
        whose legs all came in this insert is summarised from them (the
        processor publishes a call's legs together); any other from its legs as
        stored (the newest copy of each, as every query reads them)."""
        single: list[int] = []
        by_call: dict[str, dict[int, CdrLeg]] = {}
        for n, leg in enumerate(legs):
            if leg.legs == 1 and leg.leg == 0:
                single.append(n)
            else:
                by_call.setdefault(leg.cdr_id, {})[leg.leg] = leg      # a later copy in the batch wins
        partial = [cdr_id for cdr_id, by_leg in by_call.items()
                   if len(by_leg) < max(leg.legs for leg in by_leg.values()) or 0 not in by_leg]
        for start in range(0, len(partial), SUMMARY_LOOKUP_CHUNK):
            chunk = partial[start:start + SUMMARY_LOOKUP_CHUNK]
            for cdr_id in chunk:
                by_call[cdr_id] = {}
            for row in self.backend.query_dicts(
                    f"SELECT {', '.join(rows_mod.LEG_FIELDS)} FROM cdr WHERE cdr_id IN {{ids}} "
                    "ORDER BY cdr_id, leg, version DESC LIMIT 1 BY cdr_id, leg", {"ids": chunk}):
                leg = msgspec.convert(row, CdrLeg)
                by_call[leg.cdr_id][leg.leg] = leg
        calls = [row for row in (rows_mod.call_row(list(by_leg.values())) for by_leg in by_call.values()
                                 if by_leg) if row is not None]
        summary: dict[str, Any] = rows_mod.call_columns(calls, version)
        if single:
            for name, values in rows_mod.single_leg_calls(columns, single).items():
                if isinstance(values, pa.Array):        # Arrow lists: the other calls' join them
                    summary[name] = pa.chunked_array([pa.array(summary[name], values.type), values])
                else:
                    summary[name].extend(values)
            summary["version"] = [version] * (len(calls) + len(single))
        if calls or single:
            self.backend.insert(rows_mod.CALL_TABLE, summary)

    # -- calls -----------------------------------------------------------------
    def list_calls(self, f: CdrFilter, *, limit: int = 100,
                   cursor: Cursor | None = None) -> tuple[list[dict[str, Any]], Cursor | None]:
        """One page of calls, newest setup first, and the cursor of the next page
        (None on the last page)."""
        candidates = self._page_candidates(f, cursor, limit)
        if not candidates:
            return [], None
        params: dict[str, Any] = {"ids": [cdr_id for cdr_id, _ in candidates]}
        # legs of those calls; they start no earlier than leg 0
        legs_where = _Where()
        upper = f.to_ms if cursor is None else (
            cursor.setup_ms + 1 if f.to_ms is None else min(f.to_ms, cursor.setup_ms + 1))
        _time_where(min(setup_ms for _, setup_ms in candidates),
                    None if upper is None else upper + LEG_SETUP_SLACK_MS, legs_where, p="l_")
        params.update(legs_where.params)
        # the exact filters again, on the call summaries
        calls_where = _Where()
        _identity_where(f, calls_where, p="s_")
        _time_where_calls(f, calls_where)
        if cursor is not None:
            _cursor_where(cursor, calls_where, p="s_")
        _outcome_where(f, calls_where)
        params.update(calls_where.params)
        sql = (f"SELECT * FROM ({_calls_sql(legs_where, 'IN {ids}', few=True)}) "
               f"WHERE {calls_where.sql()} ORDER BY setup_ms DESC, cdr_id DESC LIMIT {{limit}}")
        params["limit"] = limit + 1
        found = [_call_dict(row) for row in self.backend.query_dicts(sql, params)]
        if len(found) > limit:
            last = found[limit - 1]
            return found[:limit], Cursor(last["setup_ms"], last["cdr_id"])
        return found, None

    def _page_candidates(self, f: CdrFilter, cursor: Cursor | None, limit: int) -> list[tuple[str, int]]:
        """(cdr_id, setup_ms) of up to ``limit + 1`` calls, newest first, that
        may be the page: without outcome filters from the time-ordered index of
        leg 0 rows (cdr_calls, sorted like the pages); with them from the stored
        call summaries (cdr_call, where every outcome is a column).

        Read in time windows growing from the newest end (PAGE_WINDOW_MS, x16
        each time) until they hold the page or reach the range's start: a
        window prunes on the sorting key, where ``ORDER BY ... LIMIT`` alone
        reads and sorts the whole range on ClickHouse 18.16 (1.3 s over 2M legs)."""
        where = _Where()
        _identity_where(f, where, p="c_")
        _time_where(f.from_ms, f.to_ms, where, p="c_")
        if cursor is not None:
            _cursor_where(cursor, where, p="c_")
        table = "cdr_calls"
        if f.has_outcome_filters:
            _outcome_where(f, where)
            table = rows_mod.CALL_TABLE
        upper = cursor.setup_ms + 1 if cursor is not None else f.to_ms
        if upper is None:
            newest = self.backend.query(f"SELECT max(setup_ms), count() FROM {table}")
            if not newest or not newest[0][1]:
                return []
            upper = newest[0][0] + 1
        lower = f.from_ms or 0
        span = PAGE_WINDOW_MS
        while True:
            start = max(lower, upper - span)
            window = _Where()
            window.parts, window.params = list(where.parts), dict(where.params)
            if start > lower:
                _time_where(start, None, window, p="w_")
            found = [(cdr_id, setup_ms) for cdr_id, setup_ms in self.backend.query(
                f"SELECT cdr_id, setup_ms FROM {table} FINAL WHERE {window.sql()} "
                "ORDER BY setup_ms DESC, cdr_id DESC LIMIT {c_limit}", {**window.params, "c_limit": limit + 1})]
            if len(found) > limit or start <= lower:
                return found
            span *= 16

    def get_call(self, cdr_id: str) -> dict[str, Any] | None:
        """One call's summary with ``legs_detail``: every leg, in leg order."""
        where = _Where()
        summary = self.backend.query_dicts(
            f"SELECT * FROM ({_calls_sql(where, '= {cdr_id}', few=True)})", {"cdr_id": cdr_id})
        if not summary:
            return None
        legs = self.backend.query_dicts(
            f"SELECT {', '.join(rows_mod.LEG_FIELDS)}, caller_number, dialled_number "
            "FROM cdr WHERE cdr_id = {cdr_id} ORDER BY leg, version DESC LIMIT 1 BY leg",
            {"cdr_id": cdr_id})
        call = _call_dict(summary[0])
        call["legs_detail"] = [_leg_dict(row) for row in legs]
        return call

    # -- statistics ------------------------------------------------------------
    def stats(self, f: CdrFilter, *, period: Period = "day", group_by: GroupBy = "none",
              prefix_len: int = 2) -> list[dict[str, Any]]:
        """ASR, NER, SEER, ACD and PDD per period and group (definitions: docs/api.md,
        docs/quality.md).

        ``group_by="gateway"`` counts legs (each leg sent to a gateway is one
        attempt at that gateway; legs not sent to a gateway form the group "");
        otherwise calls are counted, grouped by nothing, by the caller's
        account, or by the first ``prefix_len`` characters of the dialled number."""
        # the stored call summaries (cdr_call), one row per call: identity and
        # outcome filters are columns there, time ranges prune on its order;
        # whole days counted by rollup.py (cdr_day) come from their counts
        params: dict[str, Any] = {}
        counted: dict[int, int] = {}
        raw_ranges: list[tuple[int | None, int | None]] = []
        where = _Where()
        _identity_where(f, where)
        if group_by == "gateway":
            # legs, each with its own setup time; a call's legs start no earlier
            # than the call, and within LEG_SETUP_SLACK_MS of it
            _time_where(None if f.from_ms is None else max(0, f.from_ms - LEG_SETUP_SLACK_MS),
                        f.to_ms, where)
            if f.from_ms is not None:
                where.add("l_setup_ms >= {l_from_ms}", l_from_ms=f.from_ms)
            if f.to_ms is not None:
                where.add("l_setup_ms < {l_to_ms}", l_to_ms=f.to_ms)
            if f.gateway is not None:
                where.add("l_gateway = {gateway}", gateway=f.gateway)
            # (aliases inside would shadow cdr_call's own columns in the WHERE)
            legs = (f"SELECT l_setup_ms, l_gateway, l_disposition, l_sip_code, l_ringing_ms, l_duration_ms, "
                    f"l_pdd_ms FROM {rows_mod.CALL_TABLE} FINAL ARRAY JOIN leg_setup_ms AS l_setup_ms, "
                    f"leg_gateway AS l_gateway, leg_disposition AS l_disposition, leg_sip_code AS l_sip_code, "
                    f"leg_ringing_ms AS l_ringing_ms, leg_duration_ms AS l_duration_ms, "
                    f"leg_pdd_ms AS l_pdd_ms WHERE {where.sql()}")
            source = (f"SELECT l_setup_ms AS setup_ms, l_gateway AS grp, l_disposition AS disposition, "
                      f"l_sip_code AS sip_code, l_ringing_ms AS ringing_ms, l_duration_ms AS duration_ms, "
                      f"l_pdd_ms AS pdd_ms FROM ({legs})")
        else:
            counted, raw_ranges = self._counted_split(f, period, group_by, prefix_len)
            if counted:
                _ranges_where(raw_ranges, where)
            else:
                _time_where(f.from_ms, f.to_ms, where)
            _outcome_where(f, where)
            grp = {"prefix": "substring(dialled_number, 1, {prefix_len})",
                   "account": "account"}.get(group_by, "''")
            if group_by == "prefix":
                params["prefix_len"] = prefix_len
            source = (f"SELECT setup_ms, {grp} AS grp, disposition, sip_code, ringing_ms, duration_ms, "
                      f"pdd_ms FROM {rows_mod.CALL_TABLE} FINAL WHERE {where.sql()}")
        params.update(where.params)
        period_sql = {
            "5min": "intDiv(setup_ms, 300000) * 300",
            "hour": "intDiv(setup_ms, 3600000) * 3600",
            "day": "intDiv(setup_ms, 86400000) * 86400",
            "month": "toYYYYMM(toDateTime(intDiv(setup_ms, 1000), 'UTC'))",
        }[period]
        if counted:
            sql = _counted_stats_sql(source, period_sql, counted, period, group_by, bool(raw_ranges), params)
        else:
            # the same counts the per-day roll-up keeps (rollup.counts_sql), then the PDD figures
            sql = (f"SELECT {period_sql} AS period, grp, {rollup.counts_sql('')}, pdd_n AS pdd_count, "
                   f"avgIf(pdd_ms, pdd_ms > 0 AND {rollup.ATTEMPT}) AS pdd_mean, "
                   f"quantilesExactIf(0.5, 0.95)(pdd_ms, pdd_ms > 0 AND {rollup.ATTEMPT}) AS pdd_q "
                   f"FROM ({source}) GROUP BY period, grp ORDER BY period, grp")
        out = []
        for row in self.backend.query_dicts(sql, params):
            attempts, answered, effective = row["attempts"], row["answered"], row["effective"]
            start_ms = _period_start_ms(period, row["period"])
            pdd_count = row["pdd_count"]
            out.append({
                "period": iso_ms(start_ms) if start_ms else "1970-01-01T00:00:00.000Z",
                "period_start_ms": start_ms,
                "group": row["grp"],
                "attempts": attempts,
                "answered": answered,
                "effective": effective,
                "asr": _ratio(answered, attempts),
                "ner": _ratio(effective, attempts),
                "seer": _ratio(row["seer_effective"], attempts),
                "acd_s": round(row["answered_ms"] / answered / 1000, 3) if answered else None,
                "pdd_ms": {
                    "count": pdd_count,
                    "mean": (round(row["pdd_mean"], 1)
                             if pdd_count and not math.isnan(row["pdd_mean"]) else None),
                    "p50": int(row["pdd_q"][0]) if pdd_count else None,
                    "p95": int(row["pdd_q"][1]) if pdd_count else None,
                },
            })
        return out


    def _counted_split(self, f: CdrFilter, period: Period, group_by: GroupBy, prefix_len: int
                       ) -> tuple[dict[int, int], list[tuple[int | None, int | None]]]:
        """The whole days of ``f``'s range whose counts (rollup.py) answer the
        query (day -> run), and the ranges left to read from cdr_call; ({}, [])
        when the counts cannot answer it (filters, groups or periods they do
        not keep)."""
        if (not self.use_counts or period not in ("day", "month") or f != CdrFilter(from_ms=f.from_ms, to_ms=f.to_ms)
                or group_by not in ("none", "prefix")
                or (group_by == "prefix" and prefix_len > rollup.PREFIX_LEN)):
            return {}, []
        first = None if f.from_ms is None else -(-f.from_ms // DAY_MS)
        last = None if f.to_ms is None else f.to_ms // DAY_MS - 1
        if first is not None and last is not None and first > last:
            return {}, []
        parts = rollup.day_parts(self.backend)
        counted = rollup.usable_runs(self.backend, first, last, parts)
        ranges: list[tuple[int | None, int | None]] = []
        low = f.from_ms
        for day in sorted(counted):
            if low is None or low < day * DAY_MS:
                ranges.append((low, day * DAY_MS))
            low = (day + 1) * DAY_MS
        if f.to_ms is None or (low is not None and low < f.to_ms):
            ranges.append((low, f.to_ms))
        # only ranges with days that hold calls (no parts: no rows to read)
        uncounted = [day for day in parts if day not in counted]
        return counted, [(low, high) for low, high in ranges if any(
            (high is None or day * DAY_MS < high) and (low is None or (day + 1) * DAY_MS > low)
            for day in uncounted)]


def _counted_stats_sql(source: str, period_sql: str, counted: dict[int, int], period: Period, group_by: GroupBy,
                       with_calls: bool, params: dict[str, Any]) -> str:
    """The figures from the counted days (cdr_day) and, ``with_calls``, the
    calls of ``source`` (the rest of the range): counts added, PDD histograms
    merged (sumMap), the PDD quantiles exact on the merged histogram: the
    element quantilesExact takes, at position trunc(level * count) of the
    sorted values; the mean their sum over their count."""
    params.update(k_first=rollup.iso_day(min(counted)), k_last=rollup.iso_day(max(counted)),
                  k_runs=sorted(counted.values()))
    day_period = "toUInt64(day) * 86400" if period == "day" else "toUInt64(toYYYYMM(day))"
    grp = "substring(prefix, 1, {prefix_len})" if group_by == "prefix" else "''"
    branches = [f"SELECT {day_period} AS period, toString({grp}) AS grp, "
                f"{', '.join(f'{name} AS k_{name}' for name in rollup.KEPT)} FROM {rollup.TABLE} "
                "WHERE day >= toDate({k_first}) AND day <= toDate({k_last}) AND run IN {k_runs}"]
    if with_calls:
        calls = (f"SELECT toUInt64({period_sql}) AS period, toString(grp) AS grp, disposition, sip_code, "
                 f"ringing_ms, duration_ms, pdd_ms FROM ({source})")
        branches.append(f"SELECT period, grp, {', '.join(f'k_{name}' for name in rollup.KEPT)} "
                        f"FROM ({rollup.histogram_sql(calls, 'period, grp', 'k_')})")
    quantile = "tupleElement(pdd_h, 1)[arrayFirstIndex(c -> c > toUInt64({level} * pdd_count), pdd_cum)]"
    # (the histograms stay in ClickHouse: only the figures come back)
    return ("SELECT period, grp, attempts, answered, effective, seer_effective, answered_ms, pdd_count, pdd_mean, "
            "pdd_q FROM (SELECT period, grp, sum(k_attempts) AS attempts, sum(k_answered) AS answered, "
            "sum(k_effective) AS effective, sum(k_seer_effective) AS seer_effective, "
            "sum(k_answered_ms) AS answered_ms, sum(k_pdd_n) AS pdd_count, sum(k_pdd_sum) / pdd_count AS pdd_mean, "
            "sumMap(k_pdd_values, k_pdd_counts) AS pdd_h, arrayCumSum(tupleElement(pdd_h, 2)) AS pdd_cum, "
            f"[{quantile.format(level='0.5')}, {quantile.format(level='0.95')}] AS pdd_q "
            f"FROM ({' UNION ALL '.join(branches)}) GROUP BY period, grp) ORDER BY period, grp")


def _ranges_where(ranges: list[tuple[int | None, int | None]], where: _Where) -> None:
    """setup_ms in any of ``ranges`` (each [from, to), None = open), pruning like ``_time_where``."""
    alternatives = []
    for n, (low, high) in enumerate(ranges):
        one = _Where()
        _time_where(low, high, one, p=f"r{n}_")
        alternatives.append(one.sql())
        where.params.update(one.params)
    where.parts.append(" OR ".join(f"({sql})" for sql in alternatives) if alternatives else "0")


def _time_where_calls(f: CdrFilter, where: _Where) -> None:
    """The time range on call summaries (no ``setup`` column there: setup_ms only)."""
    if f.from_ms is not None:
        where.add("setup_ms >= {s_from_ms}", s_from_ms=f.from_ms)
    if f.to_ms is not None:
        where.add("setup_ms < {s_to_ms}", s_to_ms=f.to_ms)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _period_start_ms(period: Period, value: int) -> int:
    if period == "month":
        year, month = divmod(int(value), 100)
        return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)
    return int(value) * 1000
