"""Stateless refusals built from raw bytes, before the core has seen them.

The edge refuses some requests without involving a transaction: a TCP message
too large or never completed (513/400), a request from a source the pike
blocked (503 when that policy is chosen) or one shed while the worker is
behind (503 + Retry-After).  A request that cannot be parsed well enough to
answer, a response and an ACK get nothing (``None``): never an exception.
"""
from __future__ import annotations

from collections.abc import Sequence

from .build import make_response
from .message import ParseError, SipMessage, parse


def refusal(data: bytes, status: int, reason: str | None = None,
            headers: Sequence[tuple[str, str]] = ()) -> bytes | None:
    """The bytes of a ``status`` answer to the request in ``data`` (a whole
    message, or only its header section), or ``None`` when there is nothing to answer."""
    msg: SipMessage | None
    try:
        msg = parse(data)
    except ParseError as exc:
        msg = exc.partial            # e.g. a header section whose body never came
    except ValueError:               # undecodable bytes and the like: nothing to answer
        return None
    if msg is None or not msg.is_request or msg.method == "ACK" or msg.get("via") is None:
        return None
    try:
        return make_response(msg, status, reason, headers=headers).serialize()
    except (ValueError, IndexError):
        return None
