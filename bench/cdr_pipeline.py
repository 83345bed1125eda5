"""CDR pipeline benchmark, up to ``cdr.records``: synthetic call events into the
broker at a set rate, the CDR processor (``python -m cdr``) turning them into
CdrLeg rows, and the sustained calls/s measured at the records topic.

    .venv/bin/python bench/cdr_pipeline.py --calls 20000 --rate 2000 [--workers 1]

Starts its own Tansu broker on a free loopback port unless ``--bootstrap`` is
given.  Prints the figures and one JSON line (``RESULT {...}``).

Importable pieces (the ClickHouse part of the benchmark builds on them):
* ``CallBuilder`` / ``call_events(shape, ...)`` — one call's events as the
  proxy emits them (shapes: see ``SHAPES``);
* ``produce_calls(bootstrap, n, rate)`` — produce ``n`` calls' events into
  ``sip.events`` at ``rate`` calls/s, each call's events spaced like a real
  call (compressed by ``time_scale``); returns the calls' ids and BYE times.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxy.contract import events as ev  # noqa: E402

SHAPES = ("answered_caller_bye", "answered_callee_bye", "busy", "cancel", "no_answer",
          "not_found", "forked", "failover", "timeout", "teardown", "credit")
# a mix like a carrier's: mostly answered, the usual failures
MIX = {"answered_caller_bye": 40, "answered_callee_bye": 20, "busy": 10, "cancel": 8,
       "no_answer": 7, "not_found": 4, "forked": 4, "failover": 4, "timeout": 1,
       "teardown": 1, "credit": 1}

_ids = itertools.count(1)


def _event_id() -> str:
    return f"{os.getpid():08x}{next(_ids):024x}"


@dataclass
class CallBuilder:
    """Emits one call's events with the proxy's envelope; ``at(ms)`` moves the clock."""
    call_id: str
    t0: int
    from_tag: str = "ft1"
    proxy: str = "bench-1"
    caller: str = "sip:alice@example.test"
    account: str | None = "alice@example.test"
    dialled: str = "sip:+4930123456@example.test"
    events: list = field(default_factory=list)
    now: int = 0
    to_tag: str | None = None

    def at(self, offset_ms: int) -> "CallBuilder":
        self.now = self.t0 + offset_ms
        return self

    def _emit(self, cls, **fields):
        event = cls(id=_event_id(), ts_ms=self.now, call_id=self.call_id, from_tag=self.from_tag,
                    to_tag=fields.pop("to_tag", self.to_tag), proxy=self.proxy, worker=0, **fields)
        self.events.append(event)
        return event

    def invite(self, *, user_agent: str = "Softphone/1.0"):
        return self._emit(ev.InviteReceived, branch="z9hG4bKc" + self.call_id[-6:], cseq=1,
                          caller=ev.Caller(from_uri=self.caller, account=self.account,
                                           display_name="Alice"),
                          callee=ev.Callee(request_uri=self.dialled, to_uri=self.dialled),
                          source=ev.Source(ip="192.0.2.10", port=5060, transport="udp"),
                          user_agent=user_agent, max_duration_s=None)

    def route(self, index: int, *, parent: int | None = None, cause: str = "initial",
              host: str = "198.51.100.7"):
        target = f"sip:+4930123456@{host}:5060"
        return self._emit(ev.InviteRouted,
                          leg=ev.Leg(index=index, branch=f"z9hG4bK.{index}", parent=parent,
                                     cause=cause, destination=f"{host}:5060/udp"),
                          callee=ev.Callee(request_uri=self.dialled, to_uri=self.dialled, target=target))

    def progress(self, leg: int, code: int = 180, reason: str = "Ringing"):
        return self._emit(ev.CallProgress, leg=leg, code=code, reason=reason, to_tag=f"tt{leg}")

    def leg_failed(self, leg: int, code: int, reason: str):
        return self._emit(ev.LegFailed, leg=leg, code=code, reason=reason)

    def answer(self, leg: int, max_duration_s: int = 3600):
        self.to_tag = f"tt{leg}"
        return self._emit(ev.CallAnswered, leg=leg, code=200, reason="OK",
                          callee_user_agent="Gateway/2.3", max_duration_s=max_duration_s)

    def ack(self, leg: int = 0):
        return self._emit(ev.CallAck, leg=leg)

    def failed(self, code: int, reason: str, *, by_proxy: bool = False):
        return self._emit(ev.CallFailed, code=code, reason=reason, by_proxy=by_proxy,
                          to_tag=f"sl-{code}")

    def cancel(self, reason: str | None = None):
        return self._emit(ev.CallCancel, reason=reason)

    def bye(self, by: str, leg: int = 0, reason: str | None = None):
        return self._emit(ev.CallBye, by=by, reason=reason, leg=leg)

    def timeout(self, max_duration_s: int, answered_ms: int):
        return self._emit(ev.DialogTimeout, max_duration_s=max_duration_s, answered_ms=answered_ms)

    def teardown(self, reason: str, result: str = "sent"):
        return self._emit(ev.DialogTeardown, command_id="c" + _event_id(), reason=reason,
                          result=result)

    def max_duration(self, seconds: int, result: str = "applied"):
        return self._emit(ev.MaxDurationSet, command_id="c" + _event_id(), max_duration_s=seconds,
                          result=result)


def call_events(shape: str, call_id: str, t0: int, *, scale: float = 1.0,
                talk_ms: int = 60_000, proxy: str = "bench-1") -> list:
    """The events of one call of ``shape`` starting at ``t0``; every offset
    (ms in a real call) is multiplied by ``scale`` (e.g. 0.01 for a fast test)."""
    c = CallBuilder(call_id, t0, from_tag="ft" + call_id[-8:], proxy=proxy)

    def at(ms: float) -> CallBuilder:
        return c.at(int(ms * scale))

    at(0).invite()
    if shape == "not_found":
        at(2).failed(404, "Not Found", by_proxy=True)
        return c.events
    at(3).route(0)
    if shape in ("answered_caller_bye", "answered_callee_bye", "timeout", "teardown"):
        at(150).progress(0)
        at(3000).answer(0)
        at(3010).ack(0)
        if shape == "timeout":
            at(3000 + talk_ms).timeout(talk_ms // 1000, c.t0 + int(3000 * scale))
        elif shape == "teardown":
            at(3000 + talk_ms).teardown("credit exhausted")
        else:
            at(3000 + talk_ms).bye("caller" if shape == "answered_caller_bye" else "callee")
    elif shape == "busy":
        at(150).progress(0)
        at(2000).leg_failed(0, 486, "Busy Here")
        at(2001).failed(486, "Busy Here")
    elif shape == "credit":
        at(40).leg_failed(0, 402, "Payment Required")
        at(41).failed(402, "Payment Required")
    elif shape == "cancel":
        at(150).progress(0)
        at(5000).cancel()
        at(5020).leg_failed(0, 487, "Request Terminated")
        at(5021).failed(487, "Request Terminated")
    elif shape == "no_answer":
        at(150).progress(0)
        at(30_000).leg_failed(0, 408, "Request Timeout")
        at(30_001).failed(408, "Request Timeout", by_proxy=True)
    elif shape == "forked":
        at(4).route(1, cause="fork", host="198.51.100.8")
        at(150).progress(0)
        at(160).progress(1)
        at(4000).answer(1)
        at(4005).leg_failed(0, 487, "Request Terminated")
        at(4010).ack(1)
        at(4000 + talk_ms).bye("callee", leg=1)
    elif shape == "failover":
        at(500).leg_failed(0, 503, "Service Unavailable")
        at(501).route(1, parent=0, cause="failover", host="198.51.100.9")
        at(700).progress(1, 183, "Session Progress")
        at(3500).answer(1)
        at(3510).ack(1)
        at(3500 + talk_ms).bye("caller", leg=1)
    else:
        raise ValueError(f"unknown shape {shape}")
    return c.events


# --- load --------------------------------------------------------------------------

@dataclass
class ProducedCall:
    call_id: str
    shape: str
    end_wall_ms: int = 0          # when the call's last event was sent (BYE-to-row latency)


def _shape_cycle(seed: int = 7):
    rng = random.Random(seed)
    shapes, weights = zip(*MIX.items())
    while True:
        yield rng.choices(shapes, weights)[0]


async def produce_calls_async(bootstrap: str, n: int, rate: float, *, topic: str = "sip.events",
                              talk_ms: int = 2000, time_scale: float = 0.05,
                              prefix: str | None = None) -> list[ProducedCall]:
    """Produce ``n`` calls starting at ``rate`` calls/s; each call's events are
    sent at their (scaled) offsets, so many calls are in progress at once, as on
    a real proxy.  Event ``ts_ms`` is the wall clock at sending.  Returns the calls
    with the wall time their last event was acknowledged by the broker."""
    from aiokafka import AIOKafkaProducer

    from proxy.contract.config import KafkaSettings
    from proxy.contract.kafka import producer_kwargs

    settings = KafkaSettings(bootstrap_servers=bootstrap)
    producer = AIOKafkaProducer(**producer_kwargs(settings, linger_ms=5, max_batch_size=256 * 1024))
    await producer.start()
    prefix = prefix or f"bench-{os.getpid()}-{int(time.time())}"
    shapes = _shape_cycle()
    # the whole schedule up front: (send offset ms, call index, event index)
    plans = []
    schedule = []
    for i in range(n):
        shape = next(shapes)
        start_ms = i * 1000.0 / rate
        events = call_events(shape, f"{prefix}-{i:07d}@bench", 0, scale=time_scale,
                             talk_ms=talk_ms)
        plans.append((ProducedCall(events[0].call_id, shape), events))
        for j, event in enumerate(events):
            schedule.append((start_ms + event.ts_ms, i, j))
    schedule.sort()
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    wall0 = ev.now_ms()
    pending = []
    try:
        for offset_ms, i, j in schedule:
            delay = t_start + offset_ms / 1000 - loop.time()
            if delay > 0.002:
                await asyncio.sleep(delay)
            call, events = plans[i]
            event = events[j]
            stamped = event.__class__(**{**_fields(event), "ts_ms": wall0 + int(offset_ms)})
            fut = await producer.send(topic, ev.encode(stamped), key=event.call_id.encode())
            if j == len(events) - 1:
                fut.add_done_callback(lambda _f, call=call: setattr(call, "end_wall_ms", ev.now_ms()))
            pending.append(fut)
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [call for call, _ in plans]


def _fields(event) -> dict:
    import msgspec
    return {name: getattr(event, name) for name in event.__struct_fields__} if hasattr(
        event, "__struct_fields__") else msgspec.structs.asdict(event)


def produce_calls(bootstrap: str, n: int, rate: float, **kwargs) -> list[ProducedCall]:
    """Synchronous ``produce_calls_async``."""
    return asyncio.run(produce_calls_async(bootstrap, n, rate, **kwargs))
