"""The ``[cdr]`` section of sipledger.toml: the CDR processors (faust workers).

```toml
[cdr]
silence_seconds = 14400       # a call with no events for this long is closed (hangup_by "silence")
batch_size = 1000             # events folded per batch (stream.take) ...
batch_window_ms = 20          # ... or whatever came within this window
records_topic = "cdr.records" # where CdrLeg rows go (key = cdr_id, JSON)
app_id = "sipledger-cdr"      # faust app id = consumer group; changelog topics are named after it
partitions = 0                # partitions of records_topic when created (0 = kafka.partitions)
store_dir = ""                # faust's local table dir (default DATA_DIR/cdr); one subdir per worker
finished_ttl_seconds = 600    # how long a finished call's marker stops late duplicates reopening it
timer_seconds = 5.0           # how often silent calls and expired markers are looked for
standby_replicas = 0          # faust standby table copies on other workers
```
"""
from __future__ import annotations

from pathlib import Path

import msgspec

from proxy.contract.config import (ConfigError, KafkaSettings, NodeSettings, TopicSettings,
                                   convert, read_toml)

DEFAULT_STORE_DIR = "cdr"


class CdrSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True                # `up` runs a CDR processor
    silence_seconds: float = 4 * 3600.0
    batch_size: int = 1000
    batch_window_ms: int = 20
    records_topic: str = "cdr.records"
    app_id: str = "sipledger-cdr"
    partitions: int = 0
    store_dir: str = ""
    finished_ttl_seconds: float = 600.0
    timer_seconds: float = 5.0
    standby_replicas: int = 0

    @property
    def silence_ms(self) -> int:
        return int(self.silence_seconds * 1000)


class CdrConfig(msgspec.Struct, frozen=True):
    """The sections a CDR processor reads; other sections of the file are left
    to the programs they belong to (``sipledger`` validates the whole file)."""
    node: NodeSettings = NodeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    cdr: CdrSettings = CdrSettings()


def checks(settings: CdrSettings) -> list[tuple[str, bool, str]]:
    """(key, ok, rule) for the rules a type cannot express."""
    return [
        ("cdr.silence_seconds", settings.silence_seconds > 0, "must be > 0"),
        ("cdr.batch_size", 1 <= settings.batch_size <= 100_000, "must be 1..100000"),
        ("cdr.batch_window_ms", 1 <= settings.batch_window_ms <= 60_000, "must be 1..60000"),
        ("cdr.records_topic", bool(settings.records_topic), "must not be empty"),
        ("cdr.app_id", bool(settings.app_id), "must not be empty"),
        ("cdr.partitions", settings.partitions >= 0, "must be >= 0"),
        ("cdr.finished_ttl_seconds", settings.finished_ttl_seconds > 0, "must be > 0"),
        ("cdr.timer_seconds", settings.timer_seconds > 0, "must be > 0"),
        ("cdr.standby_replicas", settings.standby_replicas >= 0, "must be >= 0"),
    ]


def load(config_file: Path | None) -> CdrConfig:
    source = str(config_file or "defaults")
    raw = read_toml(config_file)
    config = convert({name: raw[name] for name in CdrConfig.__struct_fields__ if name in raw},
                     CdrConfig, source=source)
    for key, ok, rule in checks(config.cdr):
        if not ok:
            raise ConfigError(f"{source}: key '{key}': {rule}")
    return config


def store_dir(settings: CdrSettings, data_dir: Path) -> Path:
    """Where faust keeps this node's local table state (relative paths: under the data dir)."""
    return (Path(data_dir) / (settings.store_dir or DEFAULT_STORE_DIR)).resolve()
