"""The authorization call: the proxy asks credit control before routing an INVITE.

A request/response over UDP on loopback (or a private network), one datagram
each way, msgspec JSON.  The proxy imports only this module; the credit
control service (billing/) answers.  Schema version 1.
"""
from __future__ import annotations

import msgspec

from .events import SCHEMA_VERSION, escaped


class AuthorizeRequest(msgspec.Struct, frozen=True, kw_only=True):
    id: str                      # request id (a retry reuses it: the answer is idempotent)
    v: int = SCHEMA_VERSION
    ts_ms: int
    call_id: str
    account: str                 # authenticated caller, user@domain
    destination: str             # dialled number / R-URI user after the dialplan
    request_uri: str
    caller_uri: str


class AuthorizeResponse(msgspec.Struct, frozen=True, kw_only=True):
    id: str                      # the request's id
    v: int = SCHEMA_VERSION
    allowed: bool
    max_duration_s: int | None = None   # cap for the dialog (None = no cap from billing)
    code: int = 0                # SIP status to refuse with (402 by default) when not allowed
    reason: str = ""             # reason phrase / log text


_req_enc = msgspec.json.Encoder()
_req_dec = msgspec.json.Decoder(AuthorizeRequest)
_resp_dec = msgspec.json.Decoder(AuthorizeResponse)


def encode(message: AuthorizeRequest | AuthorizeResponse) -> bytes:
    """JSON; text that was not UTF-8 on the wire is escaped as in call events (``\\xNN``)."""
    try:
        return _req_enc.encode(message)
    except UnicodeEncodeError:
        return _req_enc.encode(escaped(msgspec.to_builtins(message)))


def decode_request(data: bytes) -> AuthorizeRequest:
    return _req_dec.decode(data)


def decode_response(data: bytes) -> AuthorizeResponse:
    return _resp_dec.decode(data)


# -- several billing instances: which one owns an account -----------------------------------------
#
# With ``[billing] partitioned = true`` several billing instances share one
# ledger database; each owns the accounts of the ``billing.calls`` partitions
# the Kafka group gave it, and only the owner answers their authorizations.
# The owners are a table in that database (written by billing, read by the
# proxy with ``[authorization] owners_url``): one row per partition.

OWNERS_TABLE = "billing_owner"
OWNERS_COLUMNS = ("part", "epoch", "owner", "host", "port", "updated_ms")   # part 0..N-1, port 0 = none


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``, aiokafka's
    ``partitioner.murmur2``): the hash its default partitioner applies to a key."""
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    whole = length & ~3
    for i in range(0, whole, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & 3
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h                       # unsigned, as aiokafka's (Java's is the same bits, signed)


def account_partition(account: str, partitions: int) -> int:
    """The ``billing.calls`` partition of an account: what Kafka's default
    partitioner picks for the key ``account`` (UTF-8) among ``partitions``."""
    return (murmur2(account.encode()) & 0x7FFFFFFF) % partitions
