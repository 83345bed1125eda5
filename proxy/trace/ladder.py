"""A call's captured messages as a ladder: one column per party (ip:port), one
line per message with its time and an arrow from sender to receiver."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ..contract.trace import TraceRecord

COLUMN = 24          # characters between two parties' lines


def parties(records: Sequence[TraceRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.setdefault(f"{r.src_ip}:{r.src_port}")
        seen.setdefault(f"{r.dst_ip}:{r.dst_port}")
    return list(seen)


def _time(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def render(records: Sequence[TraceRecord], width: int = COLUMN) -> list[str]:
    """Lines of text: a header with the parties, then one line per message (in time order)."""
    records = sorted(records, key=lambda r: (r.ts_ms, r.id))
    names = parties(records)
    col = {name: i for i, name in enumerate(names)}
    pad = 14                                        # "HH:MM:SS.mmm  "
    head = " " * pad + "".join(n[:width - 1].ljust(width) for n in names).rstrip()
    lines = [head]
    for r in records:
        a, b = col[f"{r.src_ip}:{r.src_port}"], col[f"{r.dst_ip}:{r.dst_port}"]
        row = [" "] * (width * (len(names) - 1) + 1)
        for i in range(len(names)):
            row[i * width] = "|"
        lo, hi = sorted((a, b))
        label = f" {r.label} {r.cseq.rsplit(' ', 1)[-1]} " if r.status else f" {r.label} "
        span = (hi - lo) * width - 1
        if span <= 0:                               # to itself: a marker, no arrow
            row[lo * width] = "o"
            text = "".join(row) + label
        else:
            body = label.strip().center(span - 2, "-")[:span - 2]
            arrow = ("-" + body + ">") if b > a else ("<" + body + "-")
            row[lo * width + 1:hi * width] = list(arrow)
            text = "".join(row)
        lines.append(f"{_time(r.ts_ms)}  {text.rstrip()}")
    return lines
