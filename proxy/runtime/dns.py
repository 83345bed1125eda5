"""DNS at the edge: the queries proxy/core/resolver.py asks for, on dnspython's
asyncio resolver, so a slow or silent server never blocks the event loop."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver

from ..core.resolver import Answer
from ..infra.config import DnsSettings

log = logging.getLogger("sipledger.dns")

HOSTS_FILE = Path("/etc/hosts")
MAX_HOSTS_BYTES = 1 << 20


def read_hosts(path: Path = HOSTS_FILE) -> dict[str, str]:
    """name -> first IPv4 address of /etc/hosts (such names resolve without DNS)."""
    hosts: dict[str, str] = {}
    try:
        text = path.read_bytes()[:MAX_HOSTS_BYTES].decode("utf-8", "replace")
    except OSError:
        return {"localhost": "127.0.0.1"}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or ":" in fields[0]:
            continue                              # comments, blanks, IPv6 (not used here)
        for name in fields[1:]:
            hosts.setdefault(name.lower().rstrip("."), fields[0])
    hosts.setdefault("localhost", "127.0.0.1")
    return hosts


class DnsClient:
    """``query(name, rdtype, callback)``: the Effects port's DNS, one task per query."""

    def __init__(self, settings: DnsSettings, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.resolver = dns.asyncresolver.Resolver(configure=not settings.nameservers)
        if settings.nameservers:
            self.resolver.port = settings.port    # before the nameservers: they take it on assignment
            self.resolver.nameservers = list(settings.nameservers)
        self.resolver.lifetime = settings.timeout_seconds
        self.resolver.timeout = min(settings.timeout_seconds, max(0.5, settings.timeout_seconds / 3))
        self.tasks: set[asyncio.Task] = set()

    def query(self, name: str, rdtype: str, callback: Callable[[Answer], None]) -> None:
        task = self.loop.create_task(self._query(name, rdtype, callback))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _query(self, name: str, rdtype: str, callback: Callable[[Answer], None]) -> None:
        answer = await self.ask(name, rdtype)
        try:
            callback(answer)
        except Exception:                         # the core must never lose the loop
            log.exception("DNS answer for %s %s", name, rdtype)

    async def ask(self, name: str, rdtype: str) -> Answer:
        try:
            result = await self.resolver.resolve(name + ".", rdtype, search=False,
                                                  raise_on_no_answer=True)
        except dns.resolver.NXDOMAIN:
            return Answer("nxdomain")
        except dns.resolver.NoAnswer:
            return Answer("nodata")
        except (dns.resolver.LifetimeTimeout, dns.exception.Timeout):
            return Answer("timeout")
        except (dns.resolver.NoNameservers, dns.exception.DNSException):
            return Answer("servfail")
        ttl = result.rrset.ttl if result.rrset is not None else 0
        return Answer("ok", tuple(_record(rdtype, r) for r in result), ttl)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _record(rdtype: str, r) -> str | tuple:
    if rdtype == "A":
        return r.address
    if rdtype == "SRV":
        return r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True)
    return (r.order, r.preference, r.flags.decode("ascii", "replace"),
            r.service.decode("ascii", "replace"), r.replacement.to_text(omit_final_dot=True))
