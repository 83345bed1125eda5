"""Commands to the proxy on `call.control` (schema version 1), key = Call-ID.

Billing's credit control and operators use them; the proxy answers each with an
event on `sip.events` (DialogTeardown / MaxDurationSet) carrying ``command_id``.
"""
from __future__ import annotations

from typing import Any

import msgspec

from .events import SCHEMA_VERSION


class _Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    v: int = SCHEMA_VERSION
    ts_ms: int
    call_id: str
    issued_by: str = "operator"


class Teardown(_Command, tag="teardown", kw_only=True, frozen=True):
    """End the call: the proxy sends BYE to both parties with a Reason header."""
    reason: str
    sip_cause: int = 200


class SetMaxDuration(_Command, tag="set_max_duration", kw_only=True, frozen=True):
    """Cap the call's total duration, counted from answer (or from now if not yet answered)."""
    seconds: int


ControlCommand = Teardown | SetMaxDuration

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ControlCommand)


def encode(command: ControlCommand) -> bytes:
    return _encoder.encode(command)


def decode(data: bytes) -> ControlCommand:
    return _decoder.decode(data)


async def publish(producer: Any, topic: str, command: ControlCommand) -> Any:
    """Hand ``command`` to an aiokafka producer, keyed by Call-ID; returns the
    delivery future.  The record's timestamp is the command's issue time on
    the project's clock: proxy workers skip commands issued before they
    started by it (proxy/events/control.py).  Billing's credit control and
    the operators' hang-up (api/calls.py) both send through here."""
    return await producer.send(topic, encode(command), key=command.call_id.encode(),
                               timestamp_ms=command.ts_ms)
