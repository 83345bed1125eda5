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
