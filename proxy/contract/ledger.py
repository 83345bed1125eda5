"""The billing service's records on Kafka: ledger events and notifications.  Wire types only.

The billing service (billing/) is the ledger's one writer.  Whatever it
decides about money leaves it on two topics, and anyone may read them (the
API process copies ``ledger.events`` into ClickHouse; an operator's CRM may
read both):

* ``ledger.events`` (key = account, UTF-8): every ``LedgerEvent``, in ledger
  order per account (``seq``), through the service's transactional outbox.
  Delivery is at-least-once: readers dedupe by ``id`` (or keep the last copy
  per ``seq``).
* ``billing.notifications`` (key = account): ``Notification`` records --
  ``balance.low``, ``credit.exhausted``.

JSON objects (msgspec), UTF-8.  **Money is a JSON string** of plain decimal
text (``"10.50"``, ``"-0.000003"``): exact, never a float; the ledger holds
at most 6 decimals.  Times are epoch milliseconds (UTC).  docs/events.md
documents both records; this module defines them.

Ledger event kinds (what the billing fold does with ``amount``):

============ ================== ===========================================
kind         amount             effect
============ ================== ===========================================
topup        > 0                balance += amount
adjustment   != 0 (signed)      balance += amount
refund       > 0                balance += amount (money given back)
debit        >= 0               balance -= amount (a rated CDR leg)
reservation  >= 0               reserved += amount (credit held by a live call)
release      >= 0               reserved -= amount (a call's hold given back)
rerate       != 0 (signed)      balance -= amount (a rerun's correction of a
                                debited CDR leg: new cost - cost so far)
============ ================== ===========================================

Every event ``id`` is a UUIDv5 of its cause (the CDR leg, the idempotency key,
the call's step), so one cause is one event, whoever retries it.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Literal, get_args

import msgspec

__all__ = ["Kind", "KINDS", "LEDGER_SCHEMA_VERSION", "LedgerEvent", "encode_event", "decode_event",
           "Notification", "encode_notification", "decode_notification"]

Kind = Literal["topup", "adjustment", "refund", "debit", "reservation", "release", "rerate"]
KINDS: tuple[str, ...] = get_args(Kind)
LEDGER_SCHEMA_VERSION = 1


class LedgerEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable money event.  Flat on purpose: the same columns in SQL,
    on Kafka (JSON, key = account) and in ClickHouse."""
    id: str
    account: str
    kind: Kind
    amount: Decimal
    currency: str
    ts_ms: int
    seq: int = 0                    # position in the durable ledger (0 until stored)
    v: int = LEDGER_SCHEMA_VERSION
    call_id: str = ""
    cdr_id: str = ""
    leg: int = -1
    key: str = ""                   # idempotency key (topup / adjustment / refund); rerate: the run id
    step: int = 0                   # reservation / release: the call's step number
    final: bool = False             # release: the call's last one (its CDR was debited)
    paid_ms: int = 0                # reservation / release: call time paid for after this event (from answer)
    answer_ms: int = 0              # reservation / debit: the call's answer (epoch ms)
    number: str = ""                # reservation / debit: the rated number
    plan: str = ""
    prefix: str = ""                # debit: the opening rate's prefix ...
    rate_name: str = ""             # ... and name
    gateway: str = ""               # debit: the leg's gateway
    duration_ms: int = 0            # debit: the leg's usage
    billed_s: int = 0               # debit: seconds billed (increments)
    note: str = ""


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """Something an account's owner should hear about, on ``billing.notifications``."""
    type: str                       # balance.low | credit.exhausted (readers ignore types they do not know)
    id: str                         # unique per notification (dedupe)
    account: str
    ts_ms: int
    currency: str
    balance: Decimal                # after the change that caused it
    available: Decimal
    threshold: Decimal | None = None    # balance.low: the threshold crossed downwards
    call_id: str = ""               # credit.exhausted: the call
    reason: str = ""
    v: int = 1


_encoder = msgspec.json.Encoder(decimal_format="string")
_event_decoder = msgspec.json.Decoder(LedgerEvent)
_notification_decoder = msgspec.json.Decoder(Notification)


def encode_event(event: LedgerEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> LedgerEvent:
    return _event_decoder.decode(data)


def encode_notification(notification: Notification) -> bytes:
    return _encoder.encode(notification)


def decode_notification(data: bytes) -> Notification:
    return _notification_decoder.decode(data)
