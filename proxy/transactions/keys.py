"""Transaction matching keys (RFC 3261 §17.1.3 client side, §17.2.3 server side).

Keys are plain tuples, cheap to hash, meant for one dict per side in the
runtime.  Branch values are lower-cased: RFC 3261 §7.3.1 makes parameter
values case-insensitive unless stated otherwise, and the branch is not an
exception; ``new_branch`` only emits lower-case tokens after the cookie.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from hashlib import blake2s

from proxy.sip.message import SipMessage
from proxy.sip.uri import UriError, parse_name_addr
from proxy.sip.via import MAGIC_COOKIE, Via, ViaError, parse_via

__all__ = ["server_key", "invite_key_for_cancel", "client_key", "new_branch", "MAGIC_COOKIE"]

# First element of an RFC 2543 key; no RFC 3261 branch (which starts with the
# cookie) can be equal to it, so the two key shapes never collide.
_RFC2543 = "rfc2543"


def server_key(request: SipMessage) -> tuple:
    """Key of the server transaction ``request`` belongs to (§17.2.3).

    An ACK gets the key of the INVITE it acknowledges (it is part of the
    INVITE transaction when the final response was non-2xx); a CANCEL gets its
    own key, since it is a transaction of its own (use
    ``invite_key_for_cancel`` to find what it cancels).  Raises ``ValueError``
    (``ViaError``) when the top Via is missing or malformed.
    """
    method = request.method
    return _request_key(request, "INVITE" if method == "ACK" else method)


def invite_key_for_cancel(cancel: SipMessage) -> tuple:
    """Key of the INVITE server transaction a CANCEL targets (§9.2): same
    branch and sent-by (RFC 3261), or same Request-URI, From tag, Call-ID,
    CSeq number and top Via (RFC 2543)."""
    return _request_key(cancel, "INVITE")


def client_key(message: SipMessage) -> tuple[str, str]:
    """``(branch, CSeq method)`` (§17.1.3) of a response, or of the outgoing
    request when registering its client transaction.  The method tells a
    CANCEL's responses from the INVITE's: both share the branch."""
    via = _top_via(message)
    return (via.branch or "").lower(), message.cseq[1]


def new_branch(seed_parts: Iterable[str] = ()) -> str:
    """A fresh RFC 3261 branch: the magic cookie, then 64 random bits in hex.

    With ``seed_parts`` (e.g. the fields of §16.6 step 8: Request-URI, From
    tag, To tag, Call-ID, CSeq number, Route …) a short digest of them comes
    first, ``z9hG4bK<digest>.<random>``, so a proxy can tell a looped request
    from a spiral by comparing digests (§16.3 item 4).  The random part alone
    keeps the branch unique.
    """
    token = os.urandom(8).hex()
    seed = "\x1f".join(seed_parts)
    if not seed:
        return MAGIC_COOKIE + token
    digest = blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    return f"{MAGIC_COOKIE}{digest}.{token}"


def _top_via(message: SipMessage) -> Via:
    top = message.top_via
    if not top:
        raise ViaError("no Via header")
    return parse_via(top)


def _request_key(request: SipMessage, method: str | None) -> tuple:
    via = _top_via(request)
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        # RFC 3261: branch + sent-by + method.  The sent-by guards against two
        # clients choosing the same branch.
        return branch.lower(), via.sent_by.lower(), method
    return _rfc2543_key(request, via, method)


def _rfc2543_key(request: SipMessage, via: Via, method: str | None) -> tuple:
    # §17.2.3 for pre-RFC 3261 clients: Request-URI, From tag, Call-ID, CSeq
    # number and top Via.  The To tag is left out on purpose: the INVITE has
    # none while its ACK carries the tag of our response, and both must map to
    # the same transaction (the tag check the RFC asks for is the TU's to make
    # if it cares).  The Via is compared by transport, sent-by and branch,
    # ignoring received/rport that the receiving side may have added.
    try:
        from_tag = parse_name_addr(request.get("from") or "").tag or ""
    except UriError:
        from_tag = ""
    return (_RFC2543, request.uri, from_tag, request.call_id, request.cseq[0],
            via.transport, via.sent_by.lower(), (via.branch or "").lower(), method)
