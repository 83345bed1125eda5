"""The ``[credit]`` and ``[ledger]`` sections of sipledger.toml (the billing service).

```toml
[credit]                        # credit control: the authorization server and live calls
listen = "127.0.0.1"            # UDP address the authorization server binds
port = 0                        # 0 = a free port, written to DATA_DIR/run/credit.port
reject_code = 402               # SIP code when the credit does not cover the first increment
blocked_code = 402              # ... when the account is blocked
no_rate_code = 403              # ... when no rate plan / rate applies to the destination
unknown_account = "allow"       # accounts without a billing account: "allow" (no cap) or "reject"
unknown_code = 403              # SIP code for unknown accounts when rejected
reserve_seconds = 30            # a live call reserves credit this far ahead ...
extend_ahead_seconds = 5        # ... and extends that long before its paid time runs out
teardown_lead_ms = 300          # teardown command goes out this long before the paid time ends
teardown_retry_seconds = 5      # no end of call seen: send the teardown again (3 times)
hold_seconds = 180              # an authorization holds the first increment this long unanswered
cdr_wait_seconds = 600          # an ended call's reservation waits this long for its CDR
max_call_seconds = 14400        # a call with no end event is considered over after this
low_balance_thresholds = ["5", "1"]   # balance.low notifications when the balance falls below
group_id = "sipledger-billing"  # Kafka consumer group of the service

[ledger]                        # where money events go (shared with the API process)
events_topic = "ledger.events"          # every ledger event, key = account (outbox)
calls_topic = "billing.calls"           # call events repartitioned by account
notifications_topic = "billing.notifications"
partitions = 0                          # of the topics above when created (0 = kafka.partitions)
sink_group = "ledger-sink"              # the API process' ClickHouse sink consumer group
repair_seconds = 30                     # the API process re-checks ClickHouse against SQLite this often
```
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import msgspec

from proxy.contract.config import (ConfigError, KafkaSettings, NodeSettings, TopicSettings,
                                   convert, read_toml)

from .settings import BillingSettings

__all__ = ["CreditSettings", "LedgerSettings", "BillingConfig", "load", "checks", "RUN_DIR",
           "PORT_FILE", "SOCKET_FILE", "LOCK_FILE"]

RUN_DIR = "run"
PORT_FILE = "credit.port"        # DATA_DIR/run/credit.port: the UDP port, decimal, one line
SOCKET_FILE = "billing.sock"     # DATA_DIR/run/billing.sock: the service's admin RPC (unix socket)
LOCK_FILE = "billing.lock"       # held (flock) by the one process that writes the ledger


class CreditSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: str = "127.0.0.1"
    port: int = 0
    reject_code: int = 402
    blocked_code: int = 402
    no_rate_code: int = 403
    unknown_account: Literal["allow", "reject"] = "allow"
    unknown_code: int = 403
    reserve_seconds: int = 30
    extend_ahead_seconds: float = 5.0
    teardown_lead_ms: int = 300
    teardown_retry_seconds: float = 5.0
    hold_seconds: float = 180.0
    cdr_wait_seconds: float = 600.0
    max_call_seconds: float = 14400.0
    low_balance_thresholds: tuple[str, ...] = ("5", "1")
    group_id: str = "sipledger-billing"

    @property
    def thresholds(self) -> tuple[Decimal, ...]:
        return tuple(sorted((Decimal(t) for t in self.low_balance_thresholds), reverse=True))


class LedgerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    events_topic: str = "ledger.events"
    calls_topic: str = "billing.calls"
    notifications_topic: str = "billing.notifications"
    partitions: int = 0
    sink_group: str = "ledger-sink"
    repair_seconds: float = 30.0


class _CdrTopic(msgspec.Struct, frozen=True):
    """The one key of ``[cdr]`` the billing service needs (the rest is the CDR processor's)."""
    records_topic: str = "cdr.records"
    partitions: int = 0


class BillingConfig(msgspec.Struct, frozen=True):
    """The sections the billing service reads (``sipledger`` validates the whole file)."""
    node: NodeSettings = NodeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    billing: BillingSettings = BillingSettings()
    credit: CreditSettings = CreditSettings()
    ledger: LedgerSettings = LedgerSettings()
    cdr: _CdrTopic = _CdrTopic()


def checks(credit: CreditSettings, ledger: LedgerSettings) -> list[tuple[str, bool, str]]:
    """(key, ok, rule) for the rules a type cannot express (api/config.py reports them too)."""
    def codes_ok(code: int) -> bool:
        return 400 <= code <= 699

    def thresholds_ok() -> bool:
        try:
            return all(Decimal(t).is_finite() for t in credit.low_balance_thresholds)
        except (InvalidOperation, TypeError):
            return False

    return [
        ("credit.port", 0 <= credit.port < 65536, "must be 0..65535 (0 = any free port)"),
        ("credit.reject_code", codes_ok(credit.reject_code), "must be a SIP error code 400..699"),
        ("credit.blocked_code", codes_ok(credit.blocked_code), "must be a SIP error code 400..699"),
        ("credit.no_rate_code", codes_ok(credit.no_rate_code), "must be a SIP error code 400..699"),
        ("credit.unknown_code", codes_ok(credit.unknown_code), "must be a SIP error code 400..699"),
        ("credit.reserve_seconds", 1 <= credit.reserve_seconds <= 86400, "must be 1..86400"),
        ("credit.extend_ahead_seconds", 0 < credit.extend_ahead_seconds < credit.reserve_seconds,
         "must be > 0 and below reserve_seconds"),
        ("credit.teardown_lead_ms", 0 <= credit.teardown_lead_ms <= 5000, "must be 0..5000"),
        ("credit.teardown_retry_seconds", credit.teardown_retry_seconds > 0, "must be > 0"),
        ("credit.hold_seconds", credit.hold_seconds > 0, "must be > 0"),
        ("credit.cdr_wait_seconds", credit.cdr_wait_seconds > 0, "must be > 0"),
        ("credit.max_call_seconds", credit.max_call_seconds > 0, "must be > 0"),
        ("credit.low_balance_thresholds", thresholds_ok(), "must be decimal strings like \"5\""),
        ("ledger.events_topic", bool(ledger.events_topic), "must not be empty"),
        ("ledger.calls_topic", bool(ledger.calls_topic), "must not be empty"),
        ("ledger.notifications_topic", bool(ledger.notifications_topic), "must not be empty"),
        ("ledger.partitions", ledger.partitions >= 0, "must be >= 0"),
        ("ledger.repair_seconds", ledger.repair_seconds > 0, "must be > 0"),
    ]


def load(config_file: Path | None) -> BillingConfig:
    source = str(config_file or "defaults")
    raw = read_toml(config_file)
    wanted = {name: raw[name] for name in BillingConfig.__struct_fields__ if name in raw}
    if "cdr" in wanted and isinstance(wanted["cdr"], dict):
        wanted["cdr"] = {k: v for k, v in wanted["cdr"].items() if k in _CdrTopic.__struct_fields__}
    config = convert(wanted, BillingConfig, source=source)
    for key, ok, rule in checks(config.credit, config.ledger):
        if not ok:
            raise ConfigError(f"{source}: key '{key}': {rule}")
    return config
