"""The cost of the location store on the event loop (docs/scale-out.md):
p50/p99 of one INVITE lookup and of one REGISTER (a refresh through the
Registrar) on SQLite and on PostgreSQL (a private server on loopback).

    PYTHONPATH=. python bench/location_cost.py [AORS] [SAMPLES]
"""
from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from proxy.core.location import LocationStore
from proxy.core.registrar import Registrar
from proxy.sip.message import SipMessage
from tests.harness.postgres import PostgresServer

NOW = 1_700_000_000.0


def register(user: str, cseq: int) -> SipMessage:
    msg = SipMessage.request("REGISTER", "sip:example.test")
    msg.add("via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1")
    msg.add("from", f"<sip:{user}@example.test>;tag=1")
    msg.add("to", f"<sip:{user}@example.test>")
    msg.add("call-id", f"reg-{user}")
    msg.add("cseq", f"{cseq} REGISTER")
    msg.add("contact", f"<sip:{user}@198.51.100.7:5060>")
    msg.add("expires", "3600")
    return msg


def percentiles(samples: list[float]) -> str:
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    return f"p50 {statistics.median(samples) * 1e6:6.0f} µs  p99 {p99 * 1e6:6.0f} µs"


def measure(name: str, target: str, aors: int, n: int) -> None:
    with LocationStore(target) as store:
        registrar = Registrar(store)
        for i in range(aors):
            registrar.register(register(f"u{i}", 1), f"u{i}@example.test", ("198.51.100.7", 5060, "udp"), NOW)
        lookups, registers = [], []
        for k in range(n):
            i = random.randrange(aors)
            t = time.perf_counter()
            store.lookup(f"u{i}@example.test", NOW)
            lookups.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = registrar.register(register(f"u{i}", 2 + k), f"u{i}@example.test",
                                     ("198.51.100.7", 5060, "udp"), NOW + 1)
            registers.append(time.perf_counter() - t)
            assert out.status == 200
    print(f"{name:10s} lookup   {percentiles(lookups)}")
    print(f"{name:10s} REGISTER {percentiles(registers)}")


def main() -> None:
    aors = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    with tempfile.TemporaryDirectory() as tmp:
        measure("sqlite", str(Path(tmp) / "location.sqlite"), aors, n)
    with PostgresServer() as pg:
        measure("postgresql", pg.create_database("location"), aors, n)


if __name__ == "__main__":
    main()
