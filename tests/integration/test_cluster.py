"""The scale-out proof of issue 18, one topology of real processes:

* two proxy instances (A on 127.0.0.2, B on 127.0.0.3) on one PostgreSQL
  location store, asking two partitioned billing instances (one PostgreSQL
  ledger, the owner table) for credit;
* two CDR processors (``python -m cdr --worker-id N``, one consumer group),
  the CDR + ledger sink (``python -m api.serve --no-api``) writing into the
  ClickHouse server, the embedded broker between them all;
* prepaid callers (alice through A, carol through B) with credit, rates
  imported; dave answers, bob is busy.

During the SIPp mix: kill -9 of A while four of its calls are up (they end by
the silence rule: the routing script caps dialogs at CAP_S, the window is
WINDOW_S), then of one CDR processor, then of the billing instance owning
carol's account.  Afterwards every call the phones saw answered has exactly
one CDR and exactly one debit, no call is doubled, every busy call has its
one CDR and no debit, and ``sipledger ledger check`` passes on the ClickHouse
server.  Figures (calls/s, take-over times, lost/doubled) are printed."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from bench.cdr_pipeline import Worker
from billing.ledger.store import LedgerStore
from cdr.recovery_watch import EXIT_STALLED
from proxy.contract import credit
from tests.harness.billing import BillingProcess, Topics, create_topics
from tests.harness.broker import settings_for
from tests.harness.calls import DOMAIN, PASSWORDS
from tests.harness.cluster import ProxyPair
from tests.harness.poll import eventually
from tests.harness.postgres import PostgresServer, postgres_available
from tests.harness.procs import terminate
from tests.harness.sipp import SippResult, SippUAS, register, run_uac
from tests.integration.test_billing_scale_out import owned_by_all, owners
from tests.integration.test_cdr_processors_scale_out import _assigned

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (Debian postgresql) not installed")]

REPO = Path(__file__).resolve().parents[2]
CAP_S, WINDOW_S = 8, 2            # the dialog cap of the routing script; [cdr] silence_seconds
ALICE, CAROL = f"alice@{DOMAIN}", f"carol@{DOMAIN}"
RATES = ("plan,prefix,name,price_per_min,first_increment,next_increment,rounding,decimals,currency\n"
         "retail,*,anywhere,0.60,1,1,up,4,EUR\n")
# A deployment's routing script: the default one, with every dialog capped, so a call
# whose proxy died is closed by the CDR processors' silence rule within the test
ROUTING = f"""from proxy.script import default


def route(ctx):
    if ctx.method == "INVITE":
        ctx.set_max_duration({CAP_S})
    return default.route(ctx)
"""


def cli(data: Path, config: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--data-dir", str(data), "--config", str(config), *args])
    assert result.exit_code == 0, (args, result.output)
    return result.output


def answered(res: SippResult) -> set[str]:
    """Call-IDs whose INVITE the caller saw answered (a 200 to it)."""
    return {m.header("Call-ID") for m in res.received(200) if "INVITE" in (m.header("CSeq") or "")}


def ended(res: SippResult) -> set[str]:
    return {m.header("Call-ID") for m in res.received(200) if "BYE" in (m.header("CSeq") or "")}


def busy(res: SippResult) -> set[str]:
    return {m.header("Call-ID") for m in res.received(486)}


def acks_from(uas: SippUAS, caller: str) -> int:
    return sum(1 for m in uas.result().received("ACK") if f"sip:{caller}@" in (m.header("From") or ""))


class Sink:
    """``python -m api.serve --no-api``: the CDR and ledger sinks alone, stopped by PID."""

    def __init__(self, data: Path, config: Path, bootstrap: str):
        self.log = data / "sink.log"
        data.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.serve", "--data-dir", str(data), "--config", str(config),
                 "--bootstrap", bootstrap, "--no-api"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return "SINK READY" in self.log.read_text()

    def stop(self) -> None:
        terminate(self.proc, grace=20)


def test_cluster_survives_kills_without_losing_or_doubling(tmp_path, broker, clickhouse_server):
    kafka = settings_for(broker)
    topics = Topics()
    asyncio.run(create_topics(kafka, topics))
    tag = uuid.uuid4().hex[:10]
    database = f"cluster_{tag}"
    procs: list = []
    with PostgresServer() as pg:
        location, ledger_url = pg.create_database("location"), pg.create_database("billing")
        # one config for every process; Topics.config() opens [cdr] (records_topic): the processors' keys join it
        common = (topics.config().replace("[cdr]\n", f"[cdr]\nsilence_seconds = {WINDOW_S}\ntimer_seconds = 0.5\n"
                                                     f'app_id = "cluster-{tag}"\n', 1)
                  .replace("[ledger]\n", f'[ledger]\nsink_group = "ledger-sink-{tag}"\n', 1)
                  + f'[billing]\ndb_url = "{ledger_url}"\npartitioned = true\n'
                  + f'[clickhouse]\nbackend = "server"\nhost = "{clickhouse_server.host}"\n'
                    f'port = {clickhouse_server.port}\ndatabase = "{database}"\nuser = "{clickhouse_server.user}"\n'
                    f'password = "{clickhouse_server.password}"\nconsumer_group = "sink-{tag}"\nbatch_ms = 50\n'
                  + f'[archive]\ngroup = "archive-{tag}"\n')
        config = tmp_path / "sipledger.toml"
        config.write_text(common)
        admin = tmp_path / "admin"
        (tmp_path / "rates.csv").write_text(RATES)
        cli(admin, config, "rates", "import", str(tmp_path / "rates.csv"))
        for account in (ALICE, CAROL):
            cli(admin, config, "rates", "assign", account, "retail")
            cli(admin, config, "account", "add", account, "--prepaid", "--currency", "EUR")
            cli(admin, config, "account", "topup", account, "10.00", "--key", f"first-{account}")
        script = tmp_path / "routing.py"
        script.write_text(ROUTING)
        store = LedgerStore(ledger_url)
        try:
            # the processors and the sink start in the background while billing starts
            cdr = [Worker(broker.bootstrap, tmp_path / "cdr", config, i, tmp_path / f"cdr{i}.log").start()
                   for i in range(2)]
            procs += cdr
            sink = Sink(tmp_path / "sink", config, broker.bootstrap)
            procs.append(sink)
            billing = []
            for name in ("b1", "b2"):
                (tmp_path / name).mkdir()
                billing.append(BillingProcess(tmp_path / name, config, broker.bootstrap))
                procs.append(billing[-1])
                billing[-1].start()
            eventually(lambda: len({o for o, _, p in owners(ledger_url).values() if p}) == 2,
                       "both billing instances to own partitions", timeout=40)
            for worker in cdr:
                worker.wait_ready(40)
            eventually(lambda: all(_assigned(w, topics.sip_events) for w in cdr),
                       "both CDR processors to get partitions", timeout=40)
            eventually(sink.ready, "the sink", timeout=40)
            with ProxyPair(tmp_path, location, broker.bootstrap, extra=common,
                           proxy_extra=f'routing_script = "{script}"',
                           authorization=f'enabled = true\nowners_url = "{ledger_url}"\ntimeout_ms = 300\n'
                                         'owners_refresh_ms = 250') as pair:
                (a, proc_a), (b, _) = pair
                figures = run_mix(tmp_path, a, proc_a, b, cdr, billing, ledger_url, kafka.partitions)
            check_outcome(tmp_path, config, admin, store, clickhouse_server, database, figures)
        finally:
            for proc in reversed(procs):      # by PID, also when the test failed
                proc.stop()
            store.close()
            backend = clickhouse_server.backend(database)
            backend.execute(f"DROP DATABASE IF EXISTS {database}")
            backend.close()


def run_mix(tmp_path, a, proc_a, b, cdr, billing, ledger_url, partitions) -> dict:
    """The SIPp mix on both proxies, with the three kills in it; what the phones saw."""
    results: dict[str, SippResult] = {}
    sipp = tmp_path / "sipp"

    def call(name, proxy, caller, callee, n, rate_ms, hold_ms, timeout, scenario="uac_call", **kw):
        results[name] = run_uac(scenario, proxy, {"caller": caller, "callee": callee, "domain": DOMAIN}, timeout,
                                auth=(caller, PASSWORDS[caller]), auth_uri=f"{callee}@{DOMAIN}", workdir=sipp,
                                hold_ms=hold_ms, calls=n, name=name, extra_args=["-r", "1", "-rp", str(rate_ms)],
                                **kw)

    def busy_calls(name, proxy, caller, n, rate_ms, timeout):
        call(name, proxy, caller, "bob", n, rate_ms, None, timeout, "uac_call_expect_failure",
             variables={"expected": 486})

    with SippUAS("uas_answer", timeout=60, workdir=sipp, calls=100) as dave, \
            SippUAS("uas_busy", timeout=60, workdir=sipp, calls=100) as bob:
        for user, uas in (("dave", dave), ("bob", bob)):      # public UDP bindings: either instance reaches them
            res = register(b, user, DOMAIN, PASSWORDS[user], uas.contact_host, 300, workdir=sipp)
            assert res.ok, res.describe()
        started = time.monotonic()
        mix = [threading.Thread(target=call, args=("b_answer", b, "carol", "dave", 20, 700, 2000, 45)),
               threading.Thread(target=busy_calls, args=("b_busy", b, "carol", 6, 2000, 30)),
               threading.Thread(target=call, args=("a_answer", a, "alice", "dave", 6, 400, 1000, 20)),
               threading.Thread(target=busy_calls, args=("a_busy", a, "alice", 3, 700, 20))]
        for t in mix:
            t.start()
        mix[2].join(30)
        mix[3].join(30)
        # A's last calls: four at once, held well past the kill: A dies with them up
        mix.append(threading.Thread(target=call, args=("a_killed", a, "alice", "dave", 4, 50, 20_000, 12)))
        mix[-1].start()
        done_a = len(answered(results["a_answer"]))
        eventually(lambda: acks_from(dave, "alice") >= done_a + 4, "A's last four calls answered", timeout=20)
        time.sleep(0.5)                        # their CallAnswered leave A's outbox within ms
        proc_a.kill()                          # kill -9 A (its workers die with it)
        proc_a.wait(10)
        kills = {"proxy A": time.monotonic()}

        at_kill = acks_from(dave, "carol")
        eventually(lambda: acks_from(dave, "carol") >= at_kill + 2, "B's calls to go on", timeout=20)
        assignments = cdr[1].log_text().count("Setting newly assigned partitions")
        cdr[0].kill()                          # kill -9 one CDR processor
        kills["CDR processor 0"] = time.monotonic()

        eventually(lambda: acks_from(dave, "carol") >= at_kill + 4, "B's calls to go on", timeout=20)
        table = owners(ledger_url)
        _, _, port = table[credit.account_partition(CAROL, partitions)]
        victim = next(p for p in billing if p.port == port)
        survivor = next(p for p in billing if p is not victim)
        victim.kill()                          # kill -9 the billing instance owning carol's account
        kills["billing instance"] = time.monotonic()
        survivor_name = next(o for o, _, p in owners(ledger_url).values() if p == survivor.port)

        took: dict[str, float] = {}             # when each take-over was first seen (both polled together)

        def taken_over() -> dict[str, float] | None:
            now = time.monotonic()
            if "cdr" not in took and cdr[1].log_text().count("Setting newly assigned partitions") > assignments:
                took["cdr"] = now
            if "billing" not in took and owned_by_all(ledger_url, {survivor_name}, partitions):
                took["billing"] = now
            return took if len(took) == 2 else None
        eventually(taken_over, "the surviving CDR processor and billing instance to take over", timeout=40,
                   interval=0.1)
        for t in mix:
            t.join(60)
        elapsed = time.monotonic() - started
    return {"results": results, "elapsed": elapsed, "cdr_survivor": cdr[1],
            "cdr_takeover": took["cdr"] - kills["CDR processor 0"],
            "billing_takeover": took["billing"] - kills["billing instance"]}


def check_outcome(tmp_path, config, admin, store, clickhouse_server, database, figures) -> None:
    results = figures["results"]
    killed = answered(results["a_killed"])
    assert len(killed) == 4, results["a_killed"].describe()
    completed = set().union(*(answered(results[n]) for n in ("b_answer", "a_answer")))
    assert completed <= set().union(*(ended(results[n]) for n in ("b_answer", "a_answer"))), \
        "an answered call of a surviving proxy did not end as the phones saw it"
    expected = completed | killed
    busy_ids = busy(results["b_busy"]) | busy(results["a_busy"])
    assert len(completed) >= 8 and busy_ids, (len(completed), len(busy_ids))     # A's 6, and B's before the kills
    backend = clickhouse_server.backend(database)
    try:
        def cdrs() -> dict[str, list[dict]]:
            rows = backend.query_dicts(
                "SELECT cdr_id, leg, call_id, disposition, hangup_by FROM cdr "
                "ORDER BY cdr_id, leg, version DESC LIMIT 1 BY cdr_id, leg")
            by_call: dict[str, list[dict]] = {}
            for row in rows:
                by_call.setdefault(row["call_id"], []).append(row)
            return by_call
        survivor = figures["cdr_survivor"]

        def supervised() -> None:
            """What `up` (or a container's wrapper) does: a processor whose table
            recovery stalled exits (cdr/recovery_watch.py) and is started again."""
            if survivor.process.poll() == EXIT_STALLED:
                figures["cdr_restarts"] = figures.get("cdr_restarts", 0) + 1
                survivor.start()

        def all_written() -> bool:
            supervised()
            return expected | busy_ids <= set(cdrs())
        # A's calls close at answer + CAP_S + WINDOW_S (the silence rule), then the sink inserts;
        # a stalled recovery costs recovery_stall_seconds and a restart more
        eventually(all_written, timeout=90, interval=0.5, fail=False)
        by_call = cdrs()
        no_cdr = (expected | busy_ids) - set(by_call)
        assert not no_cdr, ("calls without a CDR", {c: "cut by A's death" if c in killed else
                                                    "busy" if c in busy_ids else "completed" for c in no_cdr})

        def undebited() -> set[str]:
            debits = Counter(e.call_id for e in store.events(kinds=["debit"]))
            return {c for c in expected if not debits[c]}
        eventually(lambda: not undebited(), timeout=30, interval=0.5, fail=False)
        missing = undebited()
        assert not missing, ("calls without a debit", {
            c: (c in killed, by_call[c], [(e.kind, e.account, e.ts_ms) for e in store.events() if e.call_id == c])
            for c in missing})
        time.sleep(1.5)                 # anything doubled would land within a commit interval or two
        by_call = cdrs()
        debits = Counter(e.call_id for e in store.events(kinds=["debit"]))
        lost = {c for c in expected if not any(r["disposition"] == "answered" for r in by_call[c])}
        lost |= {c for c in expected if not debits[c]}
        doubled = {c for c in expected | busy_ids if len({r["cdr_id"] for r in by_call.get(c, [])}) > 1}
        doubled |= {c for c, n in debits.items() if n > 1}
        assert not lost and not doubled, (lost, doubled)
        assert {c for c in debits} == expected, "a debit for a call nobody saw answered"
        assert {r["hangup_by"] for c in killed for r in by_call[c]} == {"silence"}
        assert all(r["disposition"] == "busy" for c in busy_ids for r in by_call[c])
        report, _ = json.JSONDecoder().raw_decode(cli(admin, config, "ledger", "check", "--json"))  # + an "OK" line
        assert not report["differences"], report["differences"]
        assert sum(p["debits"] for p in report["periods"]) == len(expected)
    finally:
        backend.close()
    calls = sum(r.successful + r.failed for r in results.values())
    refused = calls - len(completed) - len(killed) - len(busy_ids)
    print(f"\ncluster: {calls} calls through 2 proxies in {figures['elapsed']:.1f}s = "
          f"{calls / figures['elapsed']:.1f} calls/s offered: {len(completed)} completed, {len(killed)} cut by "
          f"the kill of A (closed by silence), {len(busy_ids)} busy, {refused} refused; take-over after kill -9: "
          f"CDR processor {figures['cdr_takeover']:.1f}s, billing {figures['billing_takeover']:.1f}s; "
          f"stalled recoveries restarted {figures.get('cdr_restarts', 0)}; calls lost 0, doubled 0")
