"""The metric families of every sipledger process, and the one reader of them.

Prometheus multiprocess mode (docs/metrics.md, "Why multiprocess mode"): `up`
points PROMETHEUS_MULTIPROC_DIR at DATA_DIR/run/metrics (emptied at start)
before it starts its children, so every process (proxy workers, CDR
processor, billing, RADIUS, API) writes its samples to memory-mapped files
there, and the API's /metrics and `sipledger stats` both read them through
``snapshot`` -- one reader, no second copy.  A process started without that
variable keeps its metrics in memory (tests, `python -m cdr` by hand).

Names follow Kamailio's statistics (``kamailio_<group>_<name>`` in xhttp_prom)
with labels where Kamailio spells a code into the name: ``sipledger_<group>_<name>``.
Never imported by proxy/core (sans-I/O): the core counts plain integers
(proxy/core/stats.py) that the runtime copies here.
"""
from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

from .runfiles import pid_alive

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
METRICS_DIR = "metrics"            # under DATA_DIR/run
PREFIX = "sipledger_"

# seconds: sub-millisecond local hops up to a slow broker
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CDR_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

# name, kind, help, labels (kind: counter | gauge:<multiprocess mode> | histogram:<buckets>)
FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # core (Kamailio core: rcv_requests, rcv_replies, fwd_requests, fwd_replies, drop_replies, bad_msg_hdr)
    ("core_rcv_requests", "counter", "SIP requests received (retransmissions too)", ("method",)),
    ("core_rcv_replies", "counter", "SIP replies received", ("class",)),
    ("core_fwd_requests", "counter", "SIP requests relayed downstream (one per branch)", ("method",)),
    ("core_fwd_replies", "counter", "SIP replies relayed upstream", ("class",)),
    ("core_drop_replies", "counter", "replies matching no transaction, not relayed", ()),
    ("core_bad_msg", "counter", "messages that did not parse", ()),
    # tm / tmx (kamailio_tmx_*: active_transactions, created, 2xx_transactions ...)
    ("tm_transactions", "gauge:livesum", "transactions alive now (server + client)", ()),
    ("tm_created", "counter", "transactions created (server + client)", ()),
    ("tm_replies", "counter", "replies sent through transactions (relayed or local)", ("class",)),
    # sl (kamailio_sl_<code>_replies)
    ("sl_replies", "counter", "stateless replies sent", ("code",)),
    # dialog (kamailio_dialog_active_dialogs, early_dialogs, processed_dialogs, expired_dialogs, failed_dialogs)
    ("dialog_active", "gauge:livesum", "confirmed dialogs now", ()),
    ("dialog_early", "gauge:livesum", "initial INVITEs in progress now", ()),
    ("dialog_processed", "counter", "dialogs confirmed by a 2xx", ()),
    ("dialog_failed", "counter", "initial INVITEs answered with a final non-2xx", ()),
    ("dialog_expired", "counter", "dialogs ended by a timer (max duration, session timer, media timeout)", ()),
    ("dialog_teardowns", "counter", "dialogs the proxy tore down (BYE both ways), by reason", ("reason",)),
    # usrloc (kamailio_usrloc_registered_users, location_contacts, location_expires)
    ("usrloc_registered_users", "gauge:livemax", "addresses of record with a live binding", ()),
    ("usrloc_registered_contacts", "gauge:livemax", "live bindings", ()),
    ("usrloc_expired_contacts", "counter", "bindings purged on expiry", ()),
    # auth (kamailio_auth_*; OpenSIPS auth challenges)
    ("auth_challenges", "counter", "401/407 challenges sent", ()),
    ("auth_failures", "counter", "credentials that did not verify", ()),
    ("auth_successes", "counter", "credentials that verified", ()),
    # events: outbox -> Kafka
    ("events_outbox_depth", "gauge:livesum", "events waiting in the proxy outboxes", ()),
    ("events_outbox_age_seconds", "gauge:livemax", "seconds since the outbox was last empty", ()),
    ("events_published", "counter", "events acknowledged by the broker", ()),
    ("events_publish_errors", "counter", "delivery attempts that failed", ()),
    # flood protection and DNS
    ("pike_requests", "counter", "requests counted by pike", ()),
    ("pike_dropped", "counter", "requests dropped from blocked sources", ()),
    ("pike_blocks", "counter", "sources blocked", ()),
    ("shedder_shed", "counter", "requests refused by the load shedder", ()),
    ("shedder_episodes", "counter", "overload episodes", ()),
    ("shedder_shedding", "gauge:livesum", "workers shedding load now", ()),
    ("lockout_locks", "gauge:livemax", "accounts or sources locked out for guessing now", ()),
    ("dns_queries", "counter", "DNS lookups sent", ()),
    # media relay (rtpengine ng)
    ("media_ng_requests", "counter", "ng requests to rtpengine", ("command",)),
    ("media_ng_failures", "counter", "ng requests that failed or timed out", ("command",)),
    ("media_ng_seconds", "histogram:latency", "ng round trip", ("command",)),
    # credit control
    ("credit_authorize_seconds", "histogram:latency", "authorization round trip seen by the proxy", ()),
    ("credit_authorize_timeouts", "counter", "authorizations unanswered after the retries", ()),
    # processors
    ("consumer_lag", "gauge:livemax", "records behind the end of the topic, per processor", ("processor",)),
    ("cdr_records", "counter", "CDRs written", ()),
    ("cdr_event_to_cdr_seconds", "histogram:cdr", "call end event to CDR emitted", ()),
    ("ledger_lag_seconds", "gauge:livemax", "age of the newest ledger entry applied", ()),
    ("radius_queue_depth", "gauge:livesum", "RADIUS accounting records waiting", ()),
    ("radius_sent", "counter", "RADIUS accounting requests answered", ()),
)

GROUPS = ("core", "tm", "sl", "dialog", "usrloc", "auth", "events", "pike", "shedder", "lockout", "dns",
          "media", "credit", "consumer", "cdr", "ledger", "radius")


def enabled() -> bool:
    return bool(os.environ.get(ENV_DIR))


def prepare_dir(run_dir: Path) -> Path:
    """Empty DATA_DIR/run/metrics (files of a previous `up` would add up) and return it."""
    path = run_dir / METRICS_DIR
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def process_dead(pid: int) -> None:
    """Forget the live gauges of an exited child (their files stay for the counters),
    and of any other process gone meanwhile: the workers of a proxy that died went
    with it, and only the proxy's own supervisor knew their pids."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid, directory)
    for path in Path(directory).glob("gauge_live*_*.db"):
        other = path.stem.rpartition("_")[2]
        if other.isdigit() and not pid_alive(int(other)):
            multiprocess.mark_process_dead(int(other), directory)


@cache
def families() -> dict[str, Any]:
    """This process's metric objects, created once (name without prefix -> metric)."""
    from prometheus_client import Counter, Gauge, Histogram
    out: dict[str, Any] = {}
    for name, kind, doc, labels in FAMILIES:
        full = PREFIX + name
        if kind == "counter":
            out[name] = Counter(full, doc, labels)
        elif kind.startswith("gauge:"):
            out[name] = Gauge(full, doc, labels, multiprocess_mode=kind.split(":")[1])  # type: ignore[arg-type]
        else:
            buckets = CDR_BUCKETS if kind.endswith(":cdr") else LATENCY_BUCKETS
            out[name] = Histogram(full, doc, labels, buckets=buckets)
    return out


def snapshot(directory: str | os.PathLike | None = None) -> list[Any]:
    """Every process's samples, merged: the metric families /metrics and `stats` show.

    From the multiprocess directory (``directory`` or the environment's); with
    neither, this process's own registry."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
    directory = directory or os.environ.get(ENV_DIR)
    if not directory:
        return list(REGISTRY.collect())
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return list(registry.collect())


def exposition(directory: str | os.PathLike | None = None) -> bytes:
    """The Prometheus text format of ``snapshot``."""
    from prometheus_client import generate_latest

    class _Fixed:
        def collect(self):
            return snapshot(directory)
    return generate_latest(_Fixed())    # type: ignore[arg-type]


def figures(metrics: list[Any], group: str | None = None) -> list[tuple[str, float]]:
    """(``group:name{labels}``, value) rows like `opensipsctl fifo get_statistics`, sorted.

    Counters lose their ``_total``; histograms show count and sum; ``group`` filters."""
    rows: list[tuple[str, float]] = []
    for family in metrics:
        if not family.name.startswith(PREFIX):
            continue
        short = family.name[len(PREFIX):]
        fam_group, _, rest = short.partition("_")
        if group is not None and fam_group != group:
            continue
        for sample in family.samples:
            name = sample.name[len(PREFIX):]
            if name.endswith("_created") or name.endswith("_bucket"):
                continue
            name = name.removesuffix("_total")
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            fam, _, tail = name.partition("_")
            rows.append((f"{fam}:{tail}" + (f"{{{labels}}}" if labels else ""), sample.value))
    rows.sort()
    return rows


# -- the processors' figures (called from their timers, never per event) ------------------------

def set_lag(processor: str, lag: int | None) -> None:
    """Records behind the end of the topics ``processor`` reads (None: unknown, left as is)."""
    if lag is not None and enabled():
        families()["consumer_lag"].labels(processor).set(lag)


async def aiokafka_lag(consumer: Any, positions: dict | None = None) -> int | None:
    """Sum over the assigned partitions of high watermark - position (aiokafka);
    ``positions``: the processor's own (what it has handled), else the fetcher's."""
    import asyncio
    try:
        total = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = (positions or {}).get(tp)
            if position is None:
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
            total += max(0, high - position)
        return total
    except Exception:                      # rebalancing, stopping: no figure this time
        return None


def faust_lag(consumer: Any, topic: str) -> int | None:
    """The same for a faust consumer: high watermark - (last offset read + 1)."""
    try:
        total = 0
        for tp in consumer.assignment():
            if tp.topic != topic:
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            read = consumer._read_offset.get(tp)       # faust keeps no public reader of it
            total += max(0, high - (read + 1 if read is not None else 0))
        return total
    except Exception:
        return None


def gauge(name: str, value: float) -> None:
    if enabled():
        families()[name].set(value)


def count(name: str, n: float = 1) -> None:
    if enabled() and n > 0:
        families()[name].inc(n)


def observe(name: str, seconds: float) -> None:
    if enabled():
        families()[name].observe(seconds)
