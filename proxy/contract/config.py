"""Configuration shared by every sipledger program: one TOML file, every key defaulted.

Each package declares its own section as a msgspec struct; this module holds the
sections every process needs (node, kafka, topics) and the loader that turns a
bad file into one line naming the key.
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal, TypeVar

import msgspec

ENV_DATA_DIR = "SIPLEDGER_DATA_DIR"
ENV_CONFIG = "SIPLEDGER_CONFIG"
DEFAULT_DATA_DIR = "./data"
CONFIG_NAME = "sipledger.toml"


class ConfigError(Exception):
    """A configuration problem, worded as one line for the operator."""


class NodeSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str = "sipledger-1"           # instance name stamped on every event
    data_dir: str = ""                  # set from --data-dir / SIPLEDGER_DATA_DIR when empty


class KafkaSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # "embedded" starts the bundled Tansu broker under the data dir; otherwise
    # bootstrap_servers points at a Kafka cluster.
    mode: Literal["embedded", "external"] = "embedded"
    bootstrap_servers: str = ""
    embedded_port: int = 0              # 0 = a free loopback port chosen at start
    # "tansu" applies the client settings the embedded broker needs (short group
    # sessions, short fetch waits, single-record producer batches); "kafka" keeps
    # the clients' normal settings for a real cluster.
    client_profile: Literal["tansu", "kafka"] = "tansu"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    partitions: int = 6
    replication_factor: int = 1


class TopicSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sip_events: str = "sip.events"
    call_control: str = "call.control"


T = TypeVar("T")


def read_toml(path: str | os.PathLike | None) -> dict:
    if path is None:
        return {}
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: invalid TOML: {exc}") from None


def convert(raw: dict, kind: type[T], source: str = "config") -> T:
    """Validate a parsed TOML document against ``kind``; errors name the key."""
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int`, got `str` - at `$.proxy.sip_port`"
        message = str(exc)
        where = ""
        if " - at `$." in message:
            message, where = message.rsplit(" - at `$.", 1)
            where = where.rstrip("`")
        unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
        if unknown:
            where = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
            message = "unknown key"
        if where:
            message = f"key '{where}': {message}"
        raise ConfigError(f"{source}: {message}") from None


def resolve_paths(data_dir: str | None, config_file: str | None) -> tuple[Path, Path | None]:
    """Find the data dir and config file the same way for every command:
    flag, then environment variable, then defaults (config beside the data)."""
    data = Path(data_dir or os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR).resolve()
    cfg = config_file or os.environ.get(ENV_CONFIG)
    if cfg:
        return data, Path(cfg).resolve()
    candidate = data / CONFIG_NAME
    return data, candidate if candidate.exists() else None
