"""Live calls: the list across every proxy worker, and hanging one up.

The one service layer behind `sipledger calls` / `sipledger hangup` (api/calls_cli.py)
and ``/v1/calls`` (api/routes/calls.py); other parts call it too: an account
block tears the account's calls down with ``LiveCalls.hangup_account``.

* Listing reads the files the workers publish every housekeeping tick
  (proxy/runtime/livecalls.py): at most ~1 s old, nothing asked of the
  workers.  Durations are computed here, at read time.  With a server
  provisioning database (several proxy instances) it reads the table
  ``live_calls`` there instead, which every worker of every instance writes
  the same way: the calls of the whole cluster, each with its ``instance``.
* Hanging up sends a ``Teardown`` on ``call.control`` (the path billing's
  credit control uses, ``proxy.contract.commands.publish``): the worker that
  holds the call sends BYE both ways, or CANCELs it while it rings, and says
  so with a ``dialog.teardown`` event, so the CDR records the teardown.
  A call not in the list is refused (404) rather than sent blind.

The broker is the one `up` runs (DATA_DIR/run/kafka.json, written by the
supervisor), else ``kafka.bootstrap_servers``.
"""
from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from proxy.contract import commands
from proxy.contract.events import new_event_id
from proxy.infra import clock
from proxy.infra.config import KAFKA_RUN_FILE, RUN_DIR, Config
from proxy.infra.runfiles import pid_alive
from proxy.runtime.livecalls import (
    LiveCallsUnavailable,
    SharedLiveCallsReader,
    read_live_calls,
    shared_live_calls_url,
)

__all__ = ["LiveCalls", "CallNotFound", "BrokerUnknown", "LiveCallsUnavailable", "check_call_id", "check_reason",
           "CALL_ID_PATTERN", "REASON_PATTERN", "DEFAULT_REASON"]

# a Call-ID is word ["@" word] (RFC 3261 §25.1): printable, no spaces; bounded here
CALL_ID_PATTERN = r"^[!-~]{1,255}$"
# becomes the quoted text of the BYE's Reason header: printable, no quote or backslash
REASON_PATTERN = r'^[ !#-\[\]-~]{1,120}$'
DEFAULT_REASON = "hung up by the operator"
SEND_TIMEOUT_S = 10.0


class CallNotFound(LookupError):
    """No running worker lists this Call-ID."""


class BrokerUnknown(RuntimeError):
    """No broker to send the command to (no `up` running, no bootstrap configured)."""


def check_call_id(call_id: str) -> str:
    if not re.fullmatch(CALL_ID_PATTERN, call_id):
        raise ValueError("a Call-ID is 1..255 printable characters without spaces")
    return call_id


def check_reason(reason: str) -> str:
    if not re.fullmatch(REASON_PATTERN, reason):
        raise ValueError('a reason is 1..120 printable characters without " or \\')
    return reason


def _with_duration(call: dict[str, Any], now_ms: int, state: dict[str, Any]) -> dict[str, Any]:
    answered = call.get("answered_ms") or 0
    return {**call, "duration_ms": max(0, now_ms - answered) if answered else 0,
            "instance": state.get("instance", "")}


@dataclass
class LiveCalls:
    data_dir: Path
    config: Config
    _reader: SharedLiveCallsReader | None = None     # the shared table's, made at the first read

    @property
    def run_dir(self) -> Path:
        return Path(self.data_dir) / RUN_DIR

    def _states(self, now_ms: int) -> list[dict[str, Any]]:
        """The published state of every running worker: of every instance (the shared
        table) or of this host's (its files).  LiveCallsUnavailable: the table does not answer."""
        url = shared_live_calls_url(self.config)
        if url is None:
            return read_live_calls(self.run_dir)
        if self._reader is None:
            self._reader = SharedLiveCallsReader(url)
        return self._reader.read(now_ms)

    def list_calls(self, account: str | None = None) -> dict[str, Any]:
        """Every live call of the running workers (``account``: its calls only),
        oldest first, with ``duration_ms`` so far; ``truncated`` when a worker
        had more than it publishes."""
        now = clock.now_ms()
        states = self._states(now)
        items = [_with_duration(call, now, state) for state in states for call in state.get("calls", ())
                 if account is None or call.get("account") == account]
        items.sort(key=lambda c: (c.get("started_ms") or 0, c.get("call_id") or ""))
        return {"items": items, "workers": len(states),
                "truncated": any(state.get("truncated") for state in states)}

    def get(self, call_id: str) -> dict[str, Any] | None:
        check_call_id(call_id)
        now = clock.now_ms()
        for state in self._states(now):
            for call in state.get("calls", ()):
                if call.get("call_id") == call_id:
                    return _with_duration(call, now, state)
        return None

    def bootstrap(self) -> str:
        try:
            running = json.loads((self.run_dir / KAFKA_RUN_FILE).read_text())
        except (OSError, ValueError):
            running = None
        if isinstance(running, dict) and pid_alive(running.get("pid")) and running.get("bootstrap"):
            return str(running["bootstrap"])
        if self.config.kafka.bootstrap_servers:
            return self.config.kafka.bootstrap_servers
        raise BrokerUnknown("no running `sipledger up` (and no kafka.bootstrap_servers) to send the hang-up to")

    async def hangup(self, call_id: str, reason: str = DEFAULT_REASON, *,
                     issued_by: str = "operator") -> dict[str, Any]:
        """Tear one live call down; returns the call as listed and the command's id.
        ValueError: a malformed Call-ID or reason; CallNotFound; BrokerUnknown;
        OSError / KafkaError when the broker does not take the command."""
        check_reason(reason)
        call = self.get(call_id)
        if call is None:
            raise CallNotFound(f"no live call {call_id}")
        command = self._teardown(call_id, reason, issued_by)
        await self._send([command])
        return {"call": call, "command_id": command.id, "reason": reason}

    async def hangup_account(self, account: str, reason: str, *,
                             issued_by: str = "operator") -> list[dict[str, Any]]:
        """Tear down every live call of ``account`` (one producer for all of
        them); returns the calls.  For blocking an account (fraud)."""
        check_reason(reason)
        # a Call-ID cut short in the list (proxy/core/livecalls.py) cannot be addressed
        calls = [c for c in self.list_calls(account)["items"] if re.fullmatch(CALL_ID_PATTERN, c["call_id"])]
        if calls:
            await self._send([self._teardown(call["call_id"], reason, issued_by) for call in calls])
        return calls

    @staticmethod
    def _teardown(call_id: str, reason: str, issued_by: str) -> commands.Teardown:
        return commands.Teardown(id=new_event_id(), ts_ms=clock.now_ms(), call_id=call_id,
                                 reason=reason, issued_by=issued_by)

    async def _send(self, teardowns: list[commands.Teardown]) -> None:
        # the Kafka client is imported only when a call is hung up (the CLI starts faster)
        from aiokafka import AIOKafkaProducer

        from proxy.infra.kafka import producer_kwargs
        kafka = msgspec.structs.replace(self.config.kafka, bootstrap_servers=self.bootstrap())
        producer = AIOKafkaProducer(**producer_kwargs(kafka, client_id="sipledger-hangup"))
        try:
            await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
            delivered = [await commands.publish(producer, self.config.topics.call_control, command)
                         for command in teardowns]
            await asyncio.wait_for(asyncio.gather(*delivered), SEND_TIMEOUT_S)
        finally:
            await producer.stop()
