"""CdrLeg rows → the ``cdr`` table's columns (and the derived ones)."""
from __future__ import annotations

import functools
import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pyarrow as pa

from proxy.contract.cdr import CdrLeg

TABLE = "cdr"
LEG_FIELDS: tuple[str, ...] = CdrLeg.__struct_fields__
# columns the sink computes: not fields of CdrLeg
DERIVED = ("caller_number", "dialled_number", "setup", "version")
COLUMNS: tuple[str, ...] = LEG_FIELDS + DERIVED
# per leg and direction, from media.stats (migration 3); the Nullable ones are RTCP figures
MEDIA_COLUMNS: tuple[str, ...] = tuple(name for name in LEG_FIELDS if "_rtp_" in name) + (
    "media_relay", "last_media_ms")
NULLABLE_COLUMNS: frozenset[str] = frozenset(
    name for name in MEDIA_COLUMNS if name.endswith(("_lost", "_jitter_ms", "_mos_x10")))

TRANSPOSE_CHUNK = 2048
_TEL_VISUAL = re.compile(r"[-.()\s]")


@functools.lru_cache(maxsize=1 << 16)
def uri_user(uri: str) -> str:
    """The user part of a SIP/SIPS/TEL URI (or name-addr), without parameters
    or a leading "+": ``"Bob" <sip:+4930123;npdi@gw>`` → ``4930123``,
    ``tel:+1-201-555-0123`` → ``12015550123``, ``sip:example.test`` → ``""``."""
    text = uri.strip()
    if "<" in text:
        start = text.index("<") + 1
        end = text.find(">", start)
        text = text[start:end if end >= 0 else None]
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if colon and scheme == "tel":
        user = _TEL_VISUAL.sub("", rest.split(";", 1)[0])
    elif colon and scheme in ("sip", "sips"):
        if "@" not in rest:
            return ""
        user = rest.rsplit("@", 1)[0].split(":", 1)[0].split(";", 1)[0]
    elif not colon or "@" in text:
        # bare "user@host" or a bare number
        user = text.rsplit("@", 1)[0] if "@" in text else text
        user = user.split(";", 1)[0]
    else:
        return ""
    return user[1:] if user.startswith("+") else user


def to_columns(legs: Sequence[CdrLeg], version_ms: int) -> dict[str, list]:
    """Columnar data for ``Backend.insert``: one list per column of ``COLUMNS``."""
    # transposed a few thousand legs at a time: over tens of thousands the
    # tuples fall out of the CPU caches (0.9 us a leg at 5k legs, 2.9 us at 50k)
    columns: dict[str, list] = {name: [] for name in LEG_FIELDS}
    for start in range(0, len(legs), TRANSPOSE_CHUNK):
        rows = [msgspec.structs.astuple(leg) for leg in legs[start:start + TRANSPOSE_CHUNK]]
        for name, values in zip(LEG_FIELDS, zip(*rows)):
            if start:
                columns[name].extend(values)
            else:
                columns[name] = list(values)
    columns["caller_number"] = [uri_user(uri) for uri in columns["caller_uri"]]
    columns["dialled_number"] = [uri_user(uri) for uri in columns["dialled"]]
    columns["setup"] = [ms // 1000 for ms in columns["setup_ms"]]
    columns["version"] = [version_ms] * len(legs)
    return columns


_MAX_SETUP_MS = (2**32 - 1) * 1000
_RANGES = {
    "leg": (0, 2**16 - 1), "legs": (0, 2**16 - 1), "v": (0, 2**16 - 1), "sip_code": (0, 2**16 - 1),
    "call_sip_code": (0, 2**16 - 1),
    "parent_leg": (-(2**15), 2**15 - 1),
    "billable_s": (0, 2**32 - 1), "pdd_ms": (0, 2**32 - 1),
    # setup_ms / 1000 must fit DateTime (UInt32 seconds)
    "setup_ms": (0, _MAX_SETUP_MS), "ringing_ms": (0, 2**63 - 1), "answer_ms": (0, 2**63 - 1),
    "end_ms": (0, 2**63 - 1), "duration_ms": (0, 2**63 - 1),
    "last_media_ms": (0, 2**63 - 1),
    # media columns (None passes where the column is Nullable)
    **{f"{party}_rtp_{name}": bounds for party in ("caller", "callee") for name, bounds in (
        ("packets", (0, 2**64 - 1)), ("bytes", (0, 2**64 - 1)), ("errors", (0, 2**64 - 1)),
        ("lost", (-(2**63), 2**63 - 1)), ("jitter_ms", (0, 2**32 - 1)), ("mos_x10", (0, 2**8 - 1)))},
}
_MEDIA_RANGES = tuple((name, low, high) for name, (low, high) in _RANGES.items()
                      if "_rtp_" in name or name == "last_media_ms")


def problem(leg: CdrLeg) -> str | None:
    """Why ``leg`` cannot be stored (a value outside its column's range), or None."""
    if not leg.cdr_id:
        return "empty cdr_id"
    # the common case in one expression (the sink checks every row)
    if (0 <= leg.leg < 65536 and 0 <= leg.legs < 65536 and 0 <= leg.v < 65536
            and 0 <= leg.sip_code < 65536 and 0 <= leg.call_sip_code < 65536
            and -32768 <= leg.parent_leg < 32768 and 0 <= leg.billable_s < 2**32
            and 0 <= leg.pdd_ms < 2**32 and 0 <= leg.setup_ms <= _MAX_SETUP_MS
            and 0 <= leg.ringing_ms < 2**63 and 0 <= leg.answer_ms < 2**63
            and 0 <= leg.end_ms < 2**63 and 0 <= leg.duration_ms < 2**63):
        # a plain loop: half the cost of all() over nested generators (2.3 -> 1.1 us a leg)
        for name, low, high in _MEDIA_RANGES:
            value = getattr(leg, name)
            if value is not None and not low <= value <= high:
                break
        else:
            return None
    for name, (low, high) in _RANGES.items():
        value = getattr(leg, name)
        if value is not None and not low <= value <= high:
            return f"{name}={value} outside {low}..{high}"
    return None


# -- cdr_call: one row per call (migration 6) ---------------------------------------------

CALL_TABLE = "cdr_call"
_LEG_ARRAYS = (("leg_setup_ms", "setup_ms"), ("leg_gateway", "gateway"), ("leg_disposition", "disposition"),
               ("leg_sip_code", "sip_code"), ("leg_ringing_ms", "ringing_ms"),
               ("leg_duration_ms", "duration_ms"), ("leg_pdd_ms", "pdd_ms"))
CALL_COLUMNS: tuple[str, ...] = (
    "setup", "setup_ms", "cdr_id", "legs", "account", "caller_number", "caller_ip", "dialled_number",
    "disposition", "sip_code", "ringing_ms", "duration_ms", "pdd_ms", "gateways") + tuple(
    name for name, _ in _LEG_ARRAYS) + ("version",)


_LEG_ARRAY_TYPES = {"leg_setup_ms": pa.uint64(), "leg_gateway": pa.string(), "leg_disposition": pa.string(),
                    "leg_sip_code": pa.uint16(), "leg_ringing_ms": pa.uint64(), "leg_duration_ms": pa.uint64(),
                    "leg_pdd_ms": pa.uint32()}
_leg_values = operator.attrgetter(*(field for _, field in _LEG_ARRAYS))


def call_row(legs: Sequence[CdrLeg]) -> tuple | None:
    """A call's ``cdr_call`` values (``CALL_COLUMNS`` but version) from its legs,
    each once (its newest copy), in any order; None without leg 0 (a call is
    listed by its leg 0).  The summary of queries.py's ``_CALL_AGGREGATES``
    (the API's definition; tests/integration/test_cdr_store.py checks both agree):
    the deciding leg is the answered one, else the highest-numbered."""
    if len(legs) == 1:                  # most calls: the leg is the call
        first = deciding = legs[0]
        if first.leg != 0:
            return None
        by_leg: Sequence[CdrLeg] = legs
        ringing = first.ringing_ms
        gateways = [first.gateway]
    else:
        by_leg = sorted(legs, key=_leg_number)
        first = by_leg[0]
        if first.leg != 0:
            return None
        ringing = min((leg.ringing_ms for leg in by_leg if leg.ringing_ms > 0), default=0)
        deciding = max(by_leg, key=_rank)
        gateways = sorted({leg.gateway for leg in by_leg})
    setup = first.setup_ms
    if ringing > 0:
        pdd = max(ringing - setup, 0)
    elif deciding.pdd_ms > 0:
        pdd = max(deciding.setup_ms + deciding.pdd_ms - setup, 0)
    else:
        pdd = 0
    return (setup // 1000, setup, first.cdr_id, len(by_leg), first.account, uri_user(first.caller_uri),
            first.caller_ip, uri_user(first.dialled), first.call_disposition, first.call_sip_code,
            ringing, deciding.duration_ms, pdd, gateways) + tuple(
        map(list, zip(*map(_leg_values, by_leg))))


def _leg_number(leg: CdrLeg) -> int:
    return leg.leg


def _rank(leg: CdrLeg) -> int:
    return (1_000_000 if leg.disposition == "answered" else 0) + leg.leg


def single_leg_calls(columns: Mapping[str, Sequence], rows: Sequence[int]) -> dict[str, Any]:
    """``cdr_call`` columns (but version) of one-leg calls, from ``to_columns``
    output: the legs at ``rows`` are calls of their own (leg 0 of 1).  The same
    values as ``call_row`` for such a call, column by column (most calls have one
    leg: per-call tuples cost as much as the insert itself)."""
    def pick(name: str) -> Any:
        values = columns[name]
        if len(rows) == len(values):
            return values
        return values.take(pa.array(rows)) if isinstance(values, pa.Array) else [values[i] for i in rows]
    setup_ms, ringing, pdd = pick("setup_ms"), pick("ringing_ms"), pick("pdd_ms")
    out = {"setup": pick("setup"), "setup_ms": setup_ms, "cdr_id": pick("cdr_id"), "legs": [1] * len(rows),
           "account": pick("account"), "caller_number": pick("caller_number"),
           "caller_ip": pick("caller_ip"), "dialled_number": pick("dialled_number"),
           "disposition": pick("call_disposition"), "sip_code": pick("call_sip_code"),
           "ringing_ms": ringing, "duration_ms": pick("duration_ms"),
           # the leg decides: PDD to its first ringing, else its own
           "pdd_ms": [max(r - s, 0) if r > 0 else p for r, s, p in zip(ringing, setup_ms, pdd)],
           "gateways": pick("gateway")}
    # one-element arrays as Arrow lists over the flat values (offsets 0..n):
    # no Python list per call and per column
    offsets = pa.array(range(len(rows) + 1), pa.int32())
    out["gateways"] = pa.ListArray.from_arrays(offsets, pa.array(out["gateways"], pa.string()))
    for name, field in _LEG_ARRAYS:         # the leg's own values (its disposition, not the call's)
        out[name] = pa.ListArray.from_arrays(offsets, pa.array(pick(field), _LEG_ARRAY_TYPES[name]))
    return out


def call_columns(calls: Sequence[tuple], version_ms: int) -> dict[str, list]:
    """Columnar data of ``call_row`` results for ``Backend.insert``."""
    columns: dict[str, list] = {name: list(values) for name, values in
                                zip(CALL_COLUMNS, zip(*calls))} if calls else {name: [] for name in CALL_COLUMNS[:-1]}
    columns["version"] = [version_ms] * len(calls)
    return columns
