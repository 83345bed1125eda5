"""The proxy's configuration sections (TOML `[proxy]`, `[auth]`, `[registrar]`, `[provisioning]`)."""
from __future__ import annotations

from typing import Literal

import msgspec

from .contract.config import KafkaSettings, NodeSettings, TopicSettings
from .core.registrar import RegistrarSettings


class ProxySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: str = "127.0.0.1"           # address to bind (SIP UDP and TCP)
    sip_port: int = 5060
    advertised_host: str = ""           # host in Via/Record-Route; defaults to `listen`
    workers: int = 1                    # processes; >1 uses SO_REUSEPORT + a port per worker
    tcp: bool = True
    domains: tuple[str, ...] = ()             # served domains besides the provisioned ones
    max_dialog_seconds: int = 10800     # 3 h, then the proxy sends BYE both ways
    invite_timeout_seconds: float = 120.0   # Timer C: no final answer on a branch
    static_route: str = ""              # relay target for unknown users of local domains
    trusted_sources: tuple[str, ...] = ()     # CIDRs that are never challenged
    routing_script: str = ""            # path of a routing module; "" = proxy/script/default.py
    forward_depth: int = 5              # forwarding chain length before a loop is assumed
    gateway_probe_seconds: float = 30.0 # OPTIONS interval for gateways with probing on
    max_forwards: int = 70
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    outbox_flush_ms: int = 5


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    nonce_ttl_seconds: int = 300
    # MD5 first: many UAs (SIPp among them) answer only the first challenge
    algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    secret: str = ""                    # HMAC key for nonces; generated under the data dir if empty


class AuthorizationSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The authorization call to credit control (billing) at each INVITE of an account."""
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 0                       # 0 = read DATA_DIR/run/credit.port (written by the credit service)
    timeout_ms: int = 300
    retries: int = 1
    on_error: Literal["reject", "allow"] = "reject"   # no answer: refuse (503) or let the call go


class ProvisioningSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str = ""                       # SQLAlchemy URL; default sqlite under the data dir
    reload_seconds: float = 1.0


class ProxyConfig(msgspec.Struct, frozen=True):
    """What a proxy process reads from the shared TOML file (other sections are ignored here)."""
    node: NodeSettings = NodeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    proxy: ProxySettings = ProxySettings()
    auth: AuthSettings = AuthSettings()
    registrar: RegistrarSettings = RegistrarSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    authorization: AuthorizationSettings = AuthorizationSettings()
