"""The core's ``Effects.media`` on the ng client (proxy/runtime/ngclient.py).

Each request runs as a small task and calls back with a ``MediaResult``;
nothing here decides anything (proxy/core/media.py does).  The rtpengines
are the configured ones, or, with ``[media] launch``, the one `sipledger up`
started: its address is read from DATA_DIR/run/media.json (written by
proxy/runtime/rtpengine.py), looked at again at most once a second until it
is there and whenever it changes (a restarted rtpengine).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.ports import MediaResult
from ..infra.config import MediaSettings, RtpengineSettings
from ..media.ng import Schedule
from ..media.relays import relays_from_settings
from .metrics import observe_media
from .ngclient import NgClient, NgTimeout, NoRelay
from .rtpengine import read_ng

log = logging.getLogger("sipledger.media")

RECHECK_FILE_S = 1.0
RTT_SAMPLES = 100_000                # per kind, kept for the summary logged at stop


class MediaEdge:
    def __init__(self, settings: MediaSettings, data_dir: Path):
        self.settings = settings
        self.data_dir = data_dir
        self.client: NgClient | None = None
        self._url: str | None = None
        self._checked = 0.0
        self._opening = asyncio.Lock()    # one client per address, however many requests ask at once
        self._tasks: set[asyncio.Task[None]] = set()
        self.rtt: dict[str, list[float]] = {}     # ng round trips per request kind (seconds)

    async def start(self) -> None:
        if not self.settings.launch:
            self.client = await NgClient.open(relays_from_settings(self.settings), self._schedule())

    def _schedule(self) -> Schedule:
        return Schedule(timeout=self.settings.timeout_seconds, retries=self.settings.retries)

    async def _client(self) -> NgClient | None:
        """The client; with launch, (re)opened on the address in the run file."""
        if not self.settings.launch:
            return self.client
        loop = asyncio.get_running_loop()
        if self.client is not None and loop.time() - self._checked < RECHECK_FILE_S:
            return self.client
        async with self._opening:
            if self.client is not None and loop.time() - self._checked < RECHECK_FILE_S:
                return self.client
            self._checked = loop.time()
            url = read_ng(self.data_dir)
            if url is not None and url != self._url:
                launched = MediaSettings(rtpengines=(RtpengineSettings(url=url),),
                                         recheck_seconds=self.settings.recheck_seconds)
                client = await NgClient.open(relays_from_settings(launched), self._schedule())
                if self.client is not None:
                    self.client.close()      # a restarted rtpengine: its old calls are gone anyway
                self.client, self._url = client, url
        return self.client

    def request(self, kind: str, params: dict[str, Any], callback: Callable[[MediaResult], None]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(kind, params, callback))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, kind: str, params: dict[str, Any], callback: Callable[[MediaResult], None]) -> None:
        result: MediaResult
        started = time.perf_counter()     # uvloop's loop.time() has 1 ms steps
        try:
            client = await self._client()
            if client is None:
                result = MediaResult(error="the launched rtpengine is not up yet")
            else:
                call_id = params["call_id"]
                options = params.get("options") or {}
                if kind == "offer":
                    reply = await client.offer(call_id, params["from_tag"], params["sdp"], **options)
                elif kind == "answer":
                    reply = await client.answer(call_id, params["from_tag"], params["to_tag"], params["sdp"],
                                                **options)
                elif kind == "query":
                    reply = await client.query(call_id)
                elif kind == "delete":
                    reply = await client.delete(call_id, delete_delay=0)
                else:
                    raise ValueError(f"unknown media request {kind!r}")
                relay = client.relays.sticky(call_id)
                result = MediaResult(reply=reply, relay=relay.name if relay is not None else "")
            self._sample(kind, time.perf_counter() - started)
            observe_media(kind, None if result.error else time.perf_counter() - started)
        except (NgTimeout, NoRelay, OSError) as exc:
            result = MediaResult(error=str(exc) or type(exc).__name__)
            observe_media(kind, None)
        except Exception as exc:          # never leave the core waiting
            log.exception("media %s failed", kind)
            result = MediaResult(error=repr(exc))
            observe_media(kind, None)
        try:
            callback(result)
        except Exception:
            log.exception("media %s callback failed", kind)

    def _sample(self, kind: str, seconds: float) -> None:
        samples = self.rtt.setdefault(kind, [])
        if len(samples) < RTT_SAMPLES:
            samples.append(seconds)

    def rtt_summary(self) -> str:
        """ng round trips seen by the core (task start to reply, under the worker's real load)."""
        parts = []
        for kind, samples in sorted(self.rtt.items()):
            ordered = sorted(samples)
            p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            parts.append(f"{kind} n={len(ordered)} p50={p50 * 1000:.2f}ms p99={p99 * 1000:.2f}ms")
        return "; ".join(parts) or "no requests"

    def close(self) -> None:
        log.info("media ng round trips (first %d per kind): %s", RTT_SAMPLES, self.rtt_summary())
        for task in list(self._tasks):
            task.cancel()
        if self.client is not None:
            self.client.close()
