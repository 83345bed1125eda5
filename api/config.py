"""The whole sipledger.toml: every section of every program, validated in one go.

`sipledger` commands validate the full file (unknown keys are errors, naming the
key); each program then reads only its own sections.
"""
from __future__ import annotations

from pathlib import Path

import msgspec

from billing.service_settings import CreditSettings, LedgerSettings, checks as billing_checks
from billing.settings import BillingSettings
from cdr.settings import CdrSettings
from cdr.store.settings import ClickHouseSettings, checks as clickhouse_checks
from proxy.contract.config import (ConfigError, KafkaSettings, NodeSettings, TopicSettings,
                                   convert, read_toml)
from proxy.provisioning.store import default_url
from proxy.settings import AuthorizationSettings, AuthSettings, ProvisioningSettings, ProxySettings, RegistrarSettings
from radius.settings import RadiusSettings, checks as radius_checks


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True                # `up` runs the API + CDR sink process
    host: str = "127.0.0.1"
    port: int = 8080


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: NodeSettings = NodeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    proxy: ProxySettings = ProxySettings()
    auth: AuthSettings = AuthSettings()
    registrar: RegistrarSettings = RegistrarSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    authorization: AuthorizationSettings = AuthorizationSettings()
    api: ApiSettings = ApiSettings()
    billing: BillingSettings = BillingSettings()
    credit: CreditSettings = CreditSettings()
    ledger: LedgerSettings = LedgerSettings()
    cdr: CdrSettings = CdrSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    radius: RadiusSettings = RadiusSettings()


def load(config_file: Path | None) -> Config:
    config = convert(read_toml(config_file), Config, source=str(config_file or "defaults"))
    _check(config)
    return config


def _check(config: Config) -> None:
    """Rules a type cannot express, reported like type errors: naming the key."""
    checks = [
        ("proxy.sip_port", 0 < config.proxy.sip_port < 65536, "must be 1..65535"),
        ("proxy.workers", 1 <= config.proxy.workers <= 64, "must be 1..64"),
        ("proxy.max_dialog_seconds", config.proxy.max_dialog_seconds > 0, "must be > 0"),
        ("api.port", 0 < config.api.port < 65536, "must be 1..65535"),
        ("kafka.partitions", config.kafka.partitions >= 1, "must be >= 1"),
        ("kafka.bootstrap_servers", config.kafka.mode == "embedded" or bool(config.kafka.bootstrap_servers),
         "required when kafka.mode = \"external\""),
        *clickhouse_checks(config.clickhouse),
        *radius_checks(config.radius),
        *billing_checks(config.credit, config.ledger),
    ]
    for key, ok, rule in checks:
        if not ok:
            raise ConfigError(f"config: key '{key}': {rule}")


def provisioning_url(config: Config, data_dir: Path) -> str:
    return config.provisioning.url or default_url(data_dir)
