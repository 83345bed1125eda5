"""Records the billing service exchanges besides the ledger events (billing/ledger.py).

* ``CallStep`` on ``billing.calls`` (key = account): the call events credit
  control needs, repartitioned from ``sip.events`` (key = Call-ID) by account
  so that one account's calls are processed in order, on one partition.
* The admin RPC on the unix socket DATA_DIR/run/billing.sock: one JSON object
  per line each way (``RpcRequest`` -> ``RpcResponse``).  Used by the API
  process and the CLI for account changes, top-ups and adjustments (applied
  exactly once: the ledger event id is the idempotency key's hash) and for the
  live balance.
"""
from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["CallStep", "encode_step", "decode_step", "RpcRequest", "RpcResponse", "OPS"]


class CallStep(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["answered", "ended"]
    id: str                          # the sip.events event it came from
    call_id: str
    account: str
    number: str = ""                 # rated number (answered)
    ts_ms: int                       # answer time (answered) / end time (ended)
    reason: str = ""                 # the sip.events type that ended it
    v: int = 1


_step_enc = msgspec.json.Encoder()
_step_dec = msgspec.json.Decoder(CallStep)


def encode_step(step: CallStep) -> bytes:
    return _step_enc.encode(step)


def decode_step(data: bytes) -> CallStep:
    return _step_dec.decode(data)


OPS = ("ping", "balance", "account.put", "account.delete", "money")


class RpcRequest(msgspec.Struct, kw_only=True):
    op: str
    account: str = ""
    create: bool = False
    fields: dict[str, Any] = {}      # account.put: the account's fields
    kind: str = ""                   # money: topup | adjustment | refund
    amount: str = ""
    key: str = ""
    note: str = ""
    cdr_id: str = ""
    leg: int = -1


class RpcResponse(msgspec.Struct, kw_only=True):
    ok: bool
    status: int = 200
    error: str = ""
    result: dict[str, Any] = {}
