"""Calls per second through two proxy instances on one PostgreSQL location store
(docs/scale-out.md): dave registers on A; alice calls him through A and carol
through B at the same time, each SIPp at RATE calls/s, CALLS calls each (the
INVITE is challenged, so each call is INVITE/407/ACK/INVITE/200/ACK/BYE/200).
Reports what completed, what failed and the achieved rate.

    PYTHONPATH=. python bench/scale_out_rate.py [RATE] [CALLS] [WORKERS]
"""
from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.harness.broker import start_broker
from tests.harness.calls import DOMAIN, PASSWORDS
from tests.harness.cluster import ProxyPair
from tests.harness.postgres import PostgresServer
from tests.harness.sipp import SippUAS, register, run_uac

# every phone here is 127.0.0.1: at 50 calls/s (5 requests a call) it is over pike's
# 400 requests per 2 s from one source, and would be blocked as a flood
PIKE_OFF = "[pike]\nenabled = false\n"


def main() -> None:
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    workers = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 1
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = start_broker(tmp)
        try:
            with PostgresServer() as pg, ProxyPair(tmp, pg.create_database("location"), broker.bootstrap,
                                                            PIKE_OFF, workers) as pair:
                (a, _), (b, _) = pair
                with SippUAS("uas_answer", timeout=calls / rate + 60, calls=2 * calls, workdir=tmp) as dave:
                    assert register(a, "dave", DOMAIN, PASSWORDS["dave"], dave.contact_host, 3600, workdir=tmp).ok
                    results = {}

                    def load(name, proxy, caller):
                        results[name] = run_uac(
                            "uac_call", proxy, {"caller": caller, "callee": "dave", "domain": DOMAIN},
                            calls / rate + 60, auth=(caller, PASSWORDS[caller]), auth_uri=f"dave@{DOMAIN}",
                            workdir=tmp, hold_ms=0, calls=calls, name=f"rate_{name}",
                            extra_args=["-r", str(rate), "-l", str(rate * 4)])

                    threads = [threading.Thread(target=load, args=("a", a, "alice")),
                               threading.Thread(target=load, args=("b", b, "carol"))]
                    start = time.monotonic()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    elapsed = time.monotonic() - start
            ok = sum(r.successful for r in results.values())
            failed = sum(r.failed for r in results.values())
            print(f"{workers} worker(s) per instance; offered {2 * rate} calls/s ({calls} calls per instance): {ok} completed, {failed} failed, "
                  f"{ok / elapsed:.1f} calls/s achieved over {elapsed:.1f} s")
            for name, r in sorted(results.items()):
                print(f"  through {name.upper()}: {r.successful} ok, {r.failed} failed, rc={r.returncode}")
                if r.failed and "KEEP" in sys.argv:
                    print(r.describe()[-3000:])
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
