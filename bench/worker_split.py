"""Where a proxy worker's CPU goes, in situ: thread CPU per part of the worker.

    bench/worker_split.sh RATE CALLS          (runs bench/sip_rate.sh with this loaded)

perf and py-spy cannot attribute a worker's CPU on this machine (py-spy cannot
read a worker's /proc/PID/exe; perf's samples put 90 % in the cycle collector,
which switching the collector off contradicts), so this measures directly:
loaded into every Python process of the sipledger tree as ``sitecustomize``
(the script puts it on PYTHONPATH), it wraps, in the proxy workers only, the
entry points of each part with ``time.thread_time_ns`` and, once a second,
appends the totals to ``$SPLIT_OUT/w<pid>.jsonl`` with the process's CPU time.
Nothing here changes what the worker does, but the wrappers cost CPU (two
thread-clock reads each, ~30 wrapped calls per SIP call): run it below the
rate the proxy carries without them (600 calls/s where 1,000 passes).

Parts (nested ones are inside their parent's figure):

* ``udp_read``: a datagram read from a UDP socket, all it causes (guard,
  hand-off or the core)
  * ``handoff_out``: passing a datagram to its owner (Unix socket send)
  * ``core``: ``Engine.on_data`` (parse, transactions, dialogs, script ...)
    * ``send``: writing datagrams (the kernel's loopback delivery included)
    * ``emit``: encoding an event and appending it to the outbox buffer
* ``handoff_in``: reading datagrams a sibling passed (the core included)
* ``outbox_flush``: the SQLite transaction every ``outbox_flush_ms``
* ``outbox_publish``: the publisher's SQLite reads and deletes
* ``timers``: transaction and dialog timers firing (retransmissions, cleanup)
* ``gc``: the cycle collector (may run inside any other part)

``SPLIT_NOPUB=1`` leaves the event publisher off (the outbox fills; the
difference is what publishing costs: aiokafka, the producer's batches, the
broker round trips).
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

_totals: dict[str, int] = {}
_counts: dict[str, int] = {}
_clock = time.thread_time_ns


def _wrap(owner, name: str, part: str) -> None:
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        start = _clock()
        try:
            return inner(*args, **kwargs)
        finally:
            _totals[part] = _totals.get(part, 0) + _clock() - start
            _counts[part] = _counts.get(part, 0) + 1
    setattr(owner, name, timed)


def _time_callback(fn, part: str):
    def timed(*args):
        start = _clock()
        try:
            return fn(*args)
        finally:
            _totals[part] = _totals.get(part, 0) + _clock() - start
            _counts[part] = _counts.get(part, 0) + 1
    return timed


def _instrument() -> None:
    from proxy.events import outbox as outbox_module
    from proxy.events import publisher as publisher_module
    from proxy.runtime import handoff, transport, worker

    _wrap(transport.UdpEndpoint, "datagram_received", "udp_read")
    _wrap(handoff.Handoff, "route", "handoff_out")
    _wrap(handoff.Handoff, "_readable", "handoff_in")
    _wrap(worker.Worker, "_on_data", "core")
    _wrap(worker.RuntimeEffects, "send", "send")
    _wrap(worker.RuntimeEffects, "emit", "emit")
    _wrap(worker.Worker, "_flush", "outbox_flush")
    for name in ("pending", "ack", "keep", "trim"):
        _wrap(outbox_module.Outbox, name, "outbox_publish")
    schedule = worker.RuntimeEffects.call_later

    def call_later(self, delay, fn, *args):
        return schedule(self, delay, _time_callback(fn, "timers"), *args)
    worker.RuntimeEffects.call_later = call_later

    started: list[int] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [_clock()]
        elif started:
            _totals["gc"] = _totals.get("gc", 0) + _clock() - started[0]
            _counts["gc"] = _counts.get("gc", 0) + 1
    gc.callbacks.append(on_gc)

    if os.environ.get("SPLIT_NOPUB") == "1":
        publisher_module.EventPublisher.start = lambda self: None
        publisher_module.EventPublisher.wake = lambda self: None


def _dump(path: str) -> None:
    while True:
        time.sleep(1.0)
        cpu = os.times()
        with open(path, "a") as out:
            out.write(json.dumps({"t": time.monotonic(), "cpu_ns": int((cpu.user + cpu.system) * 1e9),
                                  "sys_ns": int(cpu.system * 1e9),
                                  "parts": dict(_totals), "counts": dict(_counts)}) + "\n")


def main() -> None:
    target = os.environ.get("SPLIT_OUT")
    if not target or sys.argv[1:2] != ["worker"]:        # only `python -m proxy worker ...`
        return
    try:
        _instrument()
    except Exception as exc:             # a renamed entry point: say so, measure nothing
        print(f"worker_split: not instrumented: {exc!r}", file=sys.stderr)
        return
    path = os.path.join(target, f"w{os.getpid()}.jsonl")
    threading.Thread(target=_dump, args=(path,), daemon=True, name="worker-split").start()


def report(directory: str, calls: int) -> str:
    """The table: each part's CPU per call over the loaded window of every worker."""
    parts: dict[str, float] = {}
    total = kernel = 0.0
    for name in sorted(os.listdir(directory)):
        rows = [json.loads(line) for line in open(os.path.join(directory, name))]
        busy = [r for r in rows if r["counts"].get("core")]
        if not busy:
            continue
        first = max(0, rows.index(busy[0]) - 1)
        # the window: one sample before the first datagram, to the first sample after the last
        last = next((i for i in range(rows.index(busy[-1]), len(rows))
                     if rows[i]["counts"].get("core") == busy[-1]["counts"].get("core")), len(rows) - 1)
        a, b = rows[first], rows[last]
        total += b["cpu_ns"] - a["cpu_ns"]
        kernel += b["sys_ns"] - a["sys_ns"]
        for part, value in b["parts"].items():
            parts[part] = parts.get(part, 0.0) + value - a["parts"].get(part, 0)
    lines = [f"{'part':<16} {'us/call':>8} {'share':>6}"]
    for part in ("udp_read", "handoff_out", "core", "send", "emit", "handoff_in", "outbox_flush",
                 "outbox_publish", "timers", "gc"):
        value = parts.get(part, 0.0)
        lines.append(f"{part:<16} {value / calls / 1e3:8.1f} {value / total:6.1%}")
    top = sum(parts.get(p, 0.0) for p in ("udp_read", "handoff_in", "outbox_flush", "outbox_publish", "timers"))
    rest = total - top
    lines.append(f"{'rest':<16} {rest / calls / 1e3:8.1f} {rest / total:6.1%}   "
                 "(publisher and aiokafka, the event loop, housekeeping, idle ticks)")
    lines.append(f"{'worker total':<16} {total / calls / 1e3:8.1f} {1:6.1%}")
    lines.append(f"{'of it in kernel':<16} {kernel / calls / 1e3:8.1f} {kernel / total:6.1%}   (system time: sends, reads, epoll)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1], int(sys.argv[2])))
else:
    main()
