"""The ``[clickhouse]`` section of sipledger.toml: where CDRs are stored and how
the sink batches them.

```toml
[clickhouse]
backend = "chdb"        # embedded (default, under the data dir) or "server" (clickhouse-driver)
path = ""               # chdb: default DATA_DIR/clickhouse
host = "127.0.0.1"      # server: native protocol (port 9000)
port = 9000
database = "sipledger"
user = "default"
password = ""
consumer_group = "cdr-sink"
batch_rows = 5000       # an insert happens when this many rows are buffered ...
batch_ms = 200          # ... or the oldest buffered row is this old
```

The sink reads the topic the CDR processors write: ``[cdr] records_topic``
(default ``cdr.records``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

DEFAULT_CHDB_DIR = "clickhouse"


class ClickHouseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    backend: Literal["chdb", "server"] = "chdb"
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 9000
    database: str = "sipledger"
    user: str = "default"
    password: str = ""
    consumer_group: str = "cdr-sink"
    batch_rows: int = 5000
    batch_ms: int = 200


def chdb_path(settings: ClickHouseSettings, data_dir: Path) -> Path:
    """The chdb directory: ``path`` (relative to the data dir) or DATA_DIR/clickhouse."""
    return (Path(data_dir) / (settings.path or DEFAULT_CHDB_DIR)).resolve()


def checks(settings: ClickHouseSettings) -> list[tuple[str, bool, str]]:
    """(key, ok, rule) for the rules a type cannot express; api/config.py reports them."""
    import re
    return [
        ("clickhouse.port", 0 < settings.port < 65536, "must be 1..65535"),
        ("clickhouse.database", re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", settings.database) is not None,
         "must be a plain identifier (letters, digits, _)"),
        ("clickhouse.batch_rows", 1 <= settings.batch_rows <= 1_000_000, "must be 1..1000000"),
        ("clickhouse.batch_ms", 1 <= settings.batch_ms <= 60_000, "must be 1..60000"),
    ]
