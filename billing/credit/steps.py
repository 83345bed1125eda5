"""``billing.calls``: the call events credit control needs, keyed by account.  Billing-internal.

``sip.events`` is keyed by Call-ID; credit control must see one account's
calls in order, on one partition, because they share one credit.  So the
billing service repartitions: from ``invite.received`` it learns the Call-ID
-> account map and writes each answer / end as a ``CallStep`` to
``billing.calls`` (key = account), and its consumer of that topic drives
credit control (billing/credit/control.py).

Not part of the contract (proxy/contract/): the billing service alone writes
and reads this topic -- it is its own repartition, like a Kafka Streams
internal topic -- so it may change together with the service.
"""
from __future__ import annotations

from typing import Literal

import msgspec

from proxy.contract.cdr import CdrLeg

__all__ = ["CallStep", "encode_step", "decode_step"]


class CallStep(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["answered", "ended", "cdr"]
    id: str                          # the sip.events event it came from
    call_id: str
    account: str
    number: str = ""                 # rated number (answered)
    ts_ms: int                       # answer time (answered) / end time (ended)
    reason: str = ""                 # the sip.events type that ended it
    cdr: CdrLeg | None = None        # cdr: a leg of cdr.records, brought to its account's owner
    v: int = 1


_step_enc = msgspec.json.Encoder()
_step_dec = msgspec.json.Decoder(CallStep)


def encode_step(step: CallStep) -> bytes:
    return _step_enc.encode(step)


def decode_step(data: bytes) -> CallStep:
    return _step_dec.decode(data)
