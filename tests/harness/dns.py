"""A small authoritative DNS server on loopback UDP, for tests of next-hop resolution.

    with DnsServer() as dns:
        dns.add("pbx.test", "NAPTR", '10 10 "s" "SIP+D2U" "" _sip._udp.pbx.test.')
        dns.add("_sip._udp.pbx.test", "SRV", "0 0 5099 host.pbx.test.")
        dns.add("host.pbx.test", "A", "127.0.0.1")
        ... [dns] nameservers = ["127.0.0.1"], port = dns.port ...
        assert ("pbx.test", "NAPTR") in dns.queries

Unknown names get NXDOMAIN, known names without the asked type an empty
answer (NODATA).  ``fail(name, rdtype, times)`` answers SERVFAIL that many
times; ``hold(name, rdtype)`` keeps the answers to that question until
``release()`` (a slow server).  Wire format by dnspython.
"""
from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

HOST = "127.0.0.1"


class DnsServer:
    def __init__(self, ttl: int = 300):
        self.ttl = ttl
        self.records: dict[tuple[str, str], list[str]] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.held: dict[tuple[str, str], threading.Event] = {}
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-harness", daemon=True)

    # -- configuration -------------------------------------------------------------------
    def add(self, name: str, rdtype: str, text: str) -> None:
        with self.lock:
            self.records.setdefault((_key(name), rdtype.upper()), []).append(text)

    def fail(self, name: str, rdtype: str, times: int = 1) -> None:
        """SERVFAIL for the next ``times`` questions (name, rdtype)."""
        with self.lock:
            self.failures[(_key(name), rdtype.upper())] = times

    def hold(self, name: str, rdtype: str) -> None:
        with self.lock:
            self.held[(_key(name), rdtype.upper())] = threading.Event()

    def release(self) -> None:
        with self.lock:
            for event in self.held.values():
                event.set()

    def seen(self, name: str, rdtype: str) -> int:
        with self.lock:
            return self.queries.count((_key(name), rdtype.upper()))

    # -- serving -------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            question = query.question[0]
            key = (_key(question.name.to_text()), dns.rdatatype.to_text(question.rdtype))
            with self.lock:
                self.queries.append(key)
                held = self.held.get(key)
            if held is not None:   # answered later, from its own thread: the server stays responsive
                threading.Thread(target=self._answer_when, args=(held, query, key, addr), daemon=True).start()
            else:
                self._answer(query, key, addr)

    def _answer_when(self, event: threading.Event, query, key, addr) -> None:
        while not event.wait(0.05):
            if self._stop.is_set():
                return
        self._answer(query, key, addr)

    def _answer(self, query, key: tuple[str, str], addr) -> None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        with self.lock:
            failures = self.failures.get(key, 0)
            if failures:
                self.failures[key] = failures - 1
            known = any(name == key[0] for name, _ in self.records)
            texts = list(self.records.get(key, ()))
        if failures:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif texts:
            question = query.question[0]
            response.answer.append(dns.rrset.from_text_list(question.name, self.ttl, "IN", key[1], texts))
        try:
            self.sock.sendto(response.to_wire(), addr)
        except OSError:
            pass

    # -- lifetime ----------------------------------------------------------------------------------
    def start(self) -> "DnsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.release()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _key(name: str) -> str:
    return name.rstrip(".").lower()
