"""Runs a transaction state machine's actions against the runtime.

The machines (proxy/transactions) only return actions; this is the one place
that turns them into sends, timers and calls back into the proxy core.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..sip.message import SipMessage
from ..transactions import PassUp, StartTimer, StopTimer, Terminated, TimedOut, Transmit, TransportFailed
from .ports import Effects, Target

_noop = lambda *a: None  # noqa: E731


class TxDriver:
    __slots__ = ("machine", "target", "effects", "key", "table", "timers", "on_message",
                 "on_timeout", "on_transport_failed", "on_terminated", "done", "_wire")

    def __init__(self, machine: Any, target: Target, effects: Effects, key: Any, table: dict,
                 on_message: Callable[[SipMessage], None] = _noop,
                 on_timeout: Callable[[], None] = _noop,
                 on_transport_failed: Callable[[], None] | None = None,
                 on_terminated: Callable[[], None] = _noop):
        self.machine = machine
        self.target = target
        self.effects = effects
        self.key = key
        self.table = table
        self.timers: dict[str, Any] = {}
        self.on_message = on_message
        self.on_timeout = on_timeout
        # a failed send is a timeout unless the TU tells them apart (§16.9: 503 vs 408)
        self.on_transport_failed = on_transport_failed or on_timeout
        self.on_terminated = on_terminated
        self.done = False
        self._wire: tuple[Any, bytes] | None = None   # last message sent, serialised once
        table[key] = self

    def run(self, actions) -> None:
        for action in actions:
            kind = type(action)
            if kind is Transmit:
                wire = self._wire
                if wire is None or wire[0] is not action.message:
                    wire = self._wire = (action.message, action.message.serialize())
                if not self.effects.send(wire[1], self.target):
                    self.run(self.machine.on_transport_error())
                    return
            elif kind is StartTimer:
                old = self.timers.pop(action.name, None)
                if old is not None:
                    old.cancel()
                self.timers[action.name] = self.effects.call_later(action.delay, self._fire, action.name)
            elif kind is StopTimer:
                old = self.timers.pop(action.name, None)
                if old is not None:
                    old.cancel()
            elif kind is PassUp:
                self.on_message(action.message)
            elif kind is TimedOut:
                self.on_timeout()
            elif kind is TransportFailed:
                self.on_transport_failed()
            elif kind is Terminated:
                self._terminate()

    def _fire(self, name: str) -> None:
        self.timers.pop(name, None)
        if not self.done:
            self.run(self.machine.on_timer(name))

    def _terminate(self) -> None:
        if self.done:
            return
        self.done = True
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        if self.table.get(self.key) is self:
            del self.table[self.key]
        self.on_terminated()
        # the callbacks close over the transaction user, which holds this
        # driver: drop them so the pair dies by reference counting (no GC pass)
        self.on_message = self.on_timeout = self.on_transport_failed = _noop
        self.on_terminated = _noop
