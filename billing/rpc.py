"""The admin RPC of the billing service: its records and their encoding.  Billing-internal.

The billing service listens on the unix socket DATA_DIR/run/billing.sock
(mode 0600); the API process and the CLI (billing/client.py) send one JSON
``RpcRequest`` per line and read one ``RpcResponse`` per line back.  The
operations are the money commands of billing/application.py -- account
changes, top-ups, adjustments and refunds (exactly once: the ledger event id
is the idempotency key's hash), the live balance, rerate runs -- and ``ping``.

Not part of the contract (proxy/contract/): only billing's own processes
speak it, on one host, and both sides ship together.
"""
from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["OPS", "RpcRequest", "RpcResponse", "encode", "decode_request", "decode_response"]

OPS = ("ping", "balance", "account.put", "account.delete", "money", "rerate")


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
    from_ms: int = 0                 # rerate: the period [from_ms, to_ms) by answer time
    to_ms: int = 0
    plan: str = ""                   # rerate: price with this plan ("" = each account's own)
    dry_run: bool = False
    who: str = ""                    # rerate: who asked (recorded with the run)


class RpcResponse(msgspec.Struct, kw_only=True):
    ok: bool
    status: int = 200
    error: str = ""
    result: dict[str, Any] = {}


_encoder = msgspec.json.Encoder(decimal_format="string")
_request_decoder = msgspec.json.Decoder(RpcRequest)
_response_decoder = msgspec.json.Decoder(RpcResponse)


def encode(message: RpcRequest | RpcResponse) -> bytes:
    """One line of the protocol (newline included)."""
    return _encoder.encode(message) + b"\n"


def decode_request(line: bytes) -> RpcRequest:
    return _request_decoder.decode(line)


def decode_response(line: bytes) -> RpcResponse:
    return _response_decoder.decode(line)
