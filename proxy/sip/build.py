"""Building responses and requests from other messages (RFC 3261 §8.2.6, §16.6)."""
from __future__ import annotations

import os
from collections.abc import Sequence

from .message import SipMessage

# Responses copy these from the request, in this order (§8.2.6.2).
_COPIED = ("via", "from", "to", "call-id", "cseq")

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    423: "Interval Too Brief", 473: "Filtered Destination",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
}


def new_tag() -> str:
    return os.urandom(5).hex()


def make_response(request: SipMessage, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, headers: Sequence[tuple[str, str]] = ()) -> SipMessage:
    """A response generated here (not relayed): copies the transaction headers,
    adds a To tag to non-100 responses that lack one."""
    resp = SipMessage.response(status, reason or REASONS.get(status, "Unknown"))
    lines = resp.headers
    lines.extend(h for h in request.headers if h[0] in _COPIED)
    if status > 100:
        for i, h in enumerate(lines):
            if h[0] == "to" and ";tag=" not in h[2].replace(" ", "").lower():
                lines[i] = (h[0], h[1], f"{h[2]};tag={to_tag or new_tag()}")
                break
    for key, value in headers:
        resp.add(key, value)
    return resp


def reason_header(cause: int, text: str) -> str:
    """RFC 3326 Reason header value."""
    safe = text.replace('"', "'")
    return f'SIP;cause={cause};text="{safe}"'
