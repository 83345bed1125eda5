"""The ``[radius]`` section of sipledger.toml: RADIUS accounting (radius/ worker).

```toml
[radius]
timeout = 2.0                 # seconds to wait for an Accounting-Response, per send
retries = 2                   # resends to one server before failing over (new Identifier each)
dead_time_s = 30.0            # a server that failed is skipped this long (unless all failed)
max_in_flight = 32            # requests awaiting a response at once (1..255)
nas_ip = "127.0.0.1"          # NAS-IP-Address
nas_identifier = ""           # NAS-Identifier ("" = node.name)
interim_interval_s = 0        # Interim-Update every N s of an answered call (0 = off)
send_failed = false           # Acct-Status-Type Failed (15) for unanswered calls, OpenSIPS style
multileg = "per-leg"          # "per-leg": one session per leg; "opensips": one per call, legs repeated
opensips_attributes = true    # Sip-* attributes (OpenSIPS dictionary)
cisco_attributes = true       # h323-* and Cisco-AVPair VSAs
spool_dir = ""                # durable queue + call state (default DATA_DIR/radius)
group_id = "sipledger-radius" # Kafka consumer group
silence_seconds = 14400       # a call with no events this long is closed (Stop, Lost-Service)
finished_ttl_seconds = 600    # how long a finished call ignores late duplicate events
dedupe_retention_s = 86400    # how long acknowledged record keys block re-sending
batch_size = 1000             # events per consumer fetch
dictionary = ""               # pyrad dictionary (default: radius/dictionary)

[[radius.servers]]            # in failover order; no server = RADIUS accounting off
host = "127.0.0.1"
port = 1813
secret = "testing123"
```
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import msgspec

from proxy.contract.config import (ConfigError, KafkaSettings, NodeSettings, TopicSettings,
                                   convert, read_toml)

DEFAULT_SPOOL_DIR = "radius"
DICTIONARY = Path(__file__).resolve().parent / "dictionary"
MAX_IN_FLIGHT = 255          # one RADIUS Identifier space (256) per server socket


class RadiusServer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str
    secret: str
    port: int = 1813


class RadiusSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    servers: tuple[RadiusServer, ...] = ()
    timeout: float = 2.0
    retries: int = 2
    dead_time_s: float = 30.0
    max_in_flight: int = 32
    nas_ip: str = "127.0.0.1"
    nas_identifier: str = ""
    interim_interval_s: int = 0
    send_failed: bool = False
    multileg: Literal["per-leg", "opensips"] = "per-leg"
    opensips_attributes: bool = True
    cisco_attributes: bool = True
    spool_dir: str = ""
    group_id: str = "sipledger-radius"
    silence_seconds: float = 4 * 3600.0
    finished_ttl_seconds: float = 600.0
    dedupe_retention_s: float = 86400.0
    batch_size: int = 1000
    dictionary: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.servers)


class RadiusConfig(msgspec.Struct, frozen=True):
    """The sections the RADIUS worker reads (``sipledger`` validates the whole file)."""
    node: NodeSettings = NodeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    radius: RadiusSettings = RadiusSettings()


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def checks(settings: RadiusSettings) -> list[tuple[str, bool, str]]:
    """(key, ok, rule) for the rules a type cannot express."""
    result = [
        ("radius.timeout", settings.timeout > 0, "must be > 0"),
        ("radius.retries", 0 <= settings.retries <= 10, "must be 0..10"),
        ("radius.dead_time_s", settings.dead_time_s >= 0, "must be >= 0"),
        ("radius.max_in_flight", 1 <= settings.max_in_flight <= MAX_IN_FLIGHT,
         f"must be 1..{MAX_IN_FLIGHT}"),
        ("radius.nas_ip", _is_ipv4(settings.nas_ip), "must be an IPv4 address"),
        ("radius.interim_interval_s", settings.interim_interval_s >= 0, "must be >= 0 (0 = off)"),
        ("radius.group_id", bool(settings.group_id), "must not be empty"),
        ("radius.silence_seconds", settings.silence_seconds > 0, "must be > 0"),
        ("radius.finished_ttl_seconds", settings.finished_ttl_seconds > 0, "must be > 0"),
        ("radius.dedupe_retention_s", settings.dedupe_retention_s >= 0, "must be >= 0"),
        ("radius.batch_size", 1 <= settings.batch_size <= 100_000, "must be 1..100000"),
    ]
    for i, server in enumerate(settings.servers):
        result += [
            (f"radius.servers[{i}].host", bool(server.host), "must not be empty"),
            (f"radius.servers[{i}].port", 0 < server.port < 65536, "must be 1..65535"),
            (f"radius.servers[{i}].secret", bool(server.secret), "must not be empty"),
        ]
    return result


def load(config_file: Path | None) -> RadiusConfig:
    source = str(config_file or "defaults")
    raw = read_toml(config_file)
    config = convert({name: raw[name] for name in RadiusConfig.__struct_fields__ if name in raw},
                     RadiusConfig, source=source)
    for key, ok, rule in checks(config.radius):
        if not ok:
            raise ConfigError(f"{source}: key '{key}': {rule}")
    return config


def spool_dir(settings: RadiusSettings, data_dir: Path) -> Path:
    """Where the durable queue lives (relative paths: under the data dir)."""
    return (Path(data_dir) / (settings.spool_dir or DEFAULT_SPOOL_DIR)).resolve()


def dictionary_path(settings: RadiusSettings) -> Path:
    return Path(settings.dictionary) if settings.dictionary else DICTIONARY
