"""This proxy's own identity on the wire: Via, Record-Route, and "is that me?".

With several workers each one owns private ports: its Via and Record-Route
carry them, so responses and in-dialog requests come back to the worker that
holds the transaction and the dialog, while initial requests arrive on the
shared public port (SO_REUSEPORT).
"""
from __future__ import annotations

import zlib

from ..sip.uri import UriError, parse_name_addr, parse_uri


def call_owner(call_id: bytes, workers: int) -> int:
    """The worker that holds every transaction and dialog of a Call-ID: what
    the runtime hands datagrams to (proxy/runtime/handoff.py), and what a worker
    sending a request of its own from the shared port must be for the answer,
    which comes back to that port, to reach it (natping.py).  crc32, not hash():
    every worker process must agree."""
    return zlib.crc32(call_id) % workers


class LocalNode:
    def __init__(self, host: str, ports: dict[str, int], public_port: int,
                 aliases: tuple[str, ...] = ()):
        self.host = host
        self.ports = ports                       # transport -> port this worker owns
        self.public_port = public_port
        self.hosts = {host.lower(), *(a.lower() for a in aliases)}
        self.all_ports = {public_port, *ports.values()}

    def via(self, transport: str, branch: str) -> str:
        return f"SIP/2.0/{transport.upper()} {self.host}:{self.ports[transport]};branch={branch};rport"

    def record_route_uri(self, transport: str) -> str:
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"sip:{self.host}:{self.ports[transport]}{suffix};lr"

    def record_routes(self, inbound: str, outbound: str) -> list[str]:
        """Top first.  Two entries when the transport changes (double Record-Route),
        so each side gets a hop it can reach."""
        if inbound == outbound:
            return [f"<{self.record_route_uri(outbound)}>"]
        return [f"<{self.record_route_uri(outbound)}>", f"<{self.record_route_uri(inbound)}>"]

    def is_me(self, host: str, port: int | None) -> bool:
        return host.lower() in self.hosts and (port is None or port in self.all_ports)

    def is_me_uri(self, uri: str) -> bool:
        try:
            u = parse_uri(uri)
        except UriError:
            return False
        return self.is_me(u.host, u.port)

    def is_me_route(self, route_value: str) -> bool:
        try:
            return self.is_me_uri(parse_name_addr(route_value).uri)
        except UriError:
            return False
