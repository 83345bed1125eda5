"""CdrLeg rows → the ``cdr`` table's columns (and the derived ones)."""
from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import msgspec

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
    rows = [msgspec.structs.astuple(leg) for leg in legs]
    columns: dict[str, list] = {name: list(values) for name, values in
                                zip(LEG_FIELDS, zip(*rows))} if rows else {name: [] for name in LEG_FIELDS}
    columns["caller_number"] = [uri_user(uri) for uri in columns["caller_uri"]]
    columns["dialled_number"] = [uri_user(uri) for uri in columns["dialled"]]
    columns["setup"] = [ms // 1000 for ms in columns["setup_ms"]]
    columns["version"] = [version_ms] * len(rows)
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
            and 0 <= leg.end_ms < 2**63 and 0 <= leg.duration_ms < 2**63
            and all(value is None or low <= value <= high
                    for value, low, high in ((getattr(leg, name), low, high)
                                             for name, low, high in _MEDIA_RANGES))):
        return None
    for name, (low, high) in _RANGES.items():
        value = getattr(leg, name)
        if value is not None and not low <= value <= high:
            return f"{name}={value} outside {low}..{high}"
    return None
