"""Which served domain a SIP host names: the one place domains are normalised.

A domain arrives in many spellings: ``Example.TEST``, ``example.test.`` (the
absolute DNS form), or the proxy's own address (``10.0.0.1:5060``).  Every
"is this ours?" question (From, To, Request-URI, digest realm, registrar AOR)
goes through ``served_domain`` so that no spelling is treated as foreign by one
check and as local by another: that mismatch is how a caller with From
``alice@example.test.`` used to slip past the challenge.  No I/O.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

__all__ = ["MYSELF", "normalise_host", "served_domain"]

MYSELF = "@myself"   # the proxy's own address when it cannot stand for one domain (not a host name)


class _Node(Protocol):
    def is_me(self, host: str, port: int | None) -> bool: ...


def normalise_host(host: str) -> str:
    """Lower case, without the trailing dot of an absolute name (RFC 1034 §3.1)."""
    name = host.strip().lower()
    return name[:-1] if name.endswith(".") and not name.endswith("..") else name


def served_domain(host: str, port: int | None, domains: Collection[str], node: _Node | None) -> str | None:
    """The served domain ``host[:port]`` names, or None when it is foreign.

    The proxy's own address stands for the served domain when there is exactly
    one; with several it is ``MYSELF`` (ours, but no domain: nobody
    authenticates or registers under it)."""
    name = normalise_host(host)
    if name in domains:
        return name
    if node is not None and node.is_me(name, port):
        return next(iter(domains)) if len(domains) == 1 else MYSELF
    return None
