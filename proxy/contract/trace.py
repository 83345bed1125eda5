"""Captured SIP messages (siptrace): one record per message received or sent by
a proxy worker, published on the ``[trace] topic`` in batches (a worker's
captures of a few milliseconds per Kafka record: key = node and worker, JSON)
and stored in the ClickHouse ``sip_trace`` table (docs/trace.md).

``id`` names the capture (node, worker, worker start, sequence number): a
record read twice is one row after merges.  Times are UTC epoch milliseconds.
``raw`` is the message as it went over the wire, decoded as UTF-8 (bytes that
are not UTF-8 become U+FFFD).  Fields are only ever added, with defaults.
"""
from __future__ import annotations

from typing import Literal

import msgspec

TRACE_SCHEMA_VERSION = 1

Direction = Literal["in", "out"]


class TraceRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    ts_ms: int
    direction: Direction              # in: received by the proxy, out: sent by it
    transport: str                    # udp | tcp
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    call_id: str
    cseq: str = ""                    # "1 INVITE"
    method: str = ""                  # request method, "" for a reply
    status: int = 0                   # reply code, 0 for a request
    node: str = ""
    worker: int = 0
    raw: str = ""
    v: int = TRACE_SCHEMA_VERSION

    @property
    def label(self) -> str:
        """What a ladder shows on the arrow: the method or the code."""
        return self.method or str(self.status)


class TraceBatch(msgspec.Struct, frozen=True, kw_only=True):
    """One Kafka record of ``sip.trace``: captures of one worker, in capture order.
    Batched because a call is ~14 messages: one Kafka record each cost more
    than the call itself."""
    records: list[TraceRecord]
    v: int = TRACE_SCHEMA_VERSION
