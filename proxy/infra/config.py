"""sipledger.toml: every section of every program, and the one loader.

One TOML file configures every process (proxy, CDR processor, billing, RADIUS,
API, `up`).  Every key has a default; ``load`` validates the whole file —
types, unknown keys and the rules a type cannot express — and reports the
first problem as one line naming the key.  `up` loads it before starting
anything, so a child never starts with a config it would refuse; each process
loads the same file the same way and reads the sections it needs.

Where a program's files live (SQLite databases, chdb, spools) is derived here
too, from the data dir, so every process finds them in the same place.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

ENV_DATA_DIR = "SIPLEDGER_DATA_DIR"
ENV_CONFIG = "SIPLEDGER_CONFIG"
DEFAULT_DATA_DIR = "./data"
CONFIG_NAME = "sipledger.toml"
RUN_DIR = "run"                  # DATA_DIR/run: ports, sockets and locks of running processes
KAFKA_RUN_FILE = "kafka.json"    # DATA_DIR/run/kafka.json: the broker `up` runs with (bootstrap, pid, broker_epoch)
ARCHIVE_RUN_FILE = "archive.json"  # DATA_DIR/run/archive.json: the archiver's committed positions (docs/operations.md)
CREDIT_PORT_FILE = "credit.port"       # the credit service's UDP port, decimal, one line
BILLING_SOCKET_FILE = "billing.sock"   # the billing service's admin RPC (unix socket)
BILLING_LOCK_FILE = "billing.lock"     # held (flock) by the one process that writes the ledger


class ConfigError(Exception):
    """A configuration problem, worded as one line for the operator."""


# --- every process: [node] [kafka] [topics] ----------------------------------------------

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


# --- the proxy: [proxy] [auth] [registrar] [provisioning] [authorization] -------------

class ProxySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: str = "127.0.0.1"           # address to bind (SIP UDP and TCP)
    sip_port: int = 5060
    advertised_host: str = ""           # host in Via/Record-Route; defaults to `listen`
    workers: int = 1                    # processes; they share the public sockets, each has a port of its own too
    worker_port_base: int = 0           # those own ports: 0 = any free one; N = worker i on N+i (a container publishes them)
    tcp: bool = True
    domains: tuple[str, ...] = ()       # served domains besides the provisioned ones
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
    # the event publisher's rounds at most this often when they are not full
    # (proxy/events/publisher.py: fewer, bigger batches; adds up to this to an event's delay)
    publish_interval_ms: int = 20
    # hostile input: size limits for every message, UDP or TCP (docs/hostile-input.md)
    max_message_bytes: int = 65535      # whole message; a larger body is answered 413
    max_header_bytes: int = 16384       # start line + headers; larger is answered 513 (or dropped)
    max_headers: int = 256              # header lines; more is answered 513


DIGEST_ALGORITHMS = ("MD5", "SHA-256")


class AuthAlgorithmsForDomain(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    domain: str                         # a served domain (the digest realm)
    algorithms: tuple[str, ...]         # challenges offered there, in order


class AuthAlgorithmsForUserAgent(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    match: str                          # regex matched at the start of User-Agent (a plain prefix works)
    algorithms: tuple[str, ...]         # challenges offered to those phones, in order


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    nonce_ttl_seconds: int = 300
    # ONE challenge by default: phones such as baresip 1.0 fail on a second (SHA-256) one;
    # offering more is a choice per domain or User-Agent (docs/auth.md)
    algorithms: tuple[str, ...] = ("MD5",)
    secret: str = ""                    # HMAC key for nonces; generated under the data dir if empty
    per_domain: tuple[AuthAlgorithmsForDomain, ...] = ()        # [[auth.per_domain]]
    per_user_agent: tuple[AuthAlgorithmsForUserAgent, ...] = () # [[auth.per_user_agent]], first match wins
    # password guessing (fail2ban-like): failures within the window lock the source / user
    lockout_failures: int = 10          # failed checks from one source IP before it is locked (0 = never)
    lockout_user_failures: int = 30     # failed checks for one user before it is locked (0 = never)
    lockout_window_s: float = 60.0      # failures older than this are forgotten
    lockout_s: float = 600.0            # how long a lock lasts (`sipledger auth unlock` ends it early)
    lockout_max_entries: int = 50_000   # per worker: failure counters and locks kept at most


class RegistrarSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    min_expires: int = 60               # shorter non-zero requests get 423
    max_expires: int = 3600             # longer requests are shortened to this
    default_expires: int = 3600         # when neither Expires nor ;expires= is given
    max_contacts: int = 10              # bindings per AOR, 0 = unlimited
    # SQLAlchemy URL of the location store; "" = SQLite under the data dir.  A PostgreSQL
    # URL shared by several proxy instances makes them one registrar (docs/scale-out.md)
    location_url: str = ""

    def __post_init__(self) -> None:
        # the registrar is built from this struct in tests and tools too: refuse there as well
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("needs 0 < min_expires <= default_expires <= max_expires")
        if self.max_contacts < 0:
            raise ValueError("max_contacts must be >= 0 (0 = unlimited)")


class ProvisioningSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str = ""                       # SQLAlchemy URL; default sqlite under the data dir
    reload_seconds: float = 1.0


class AuthorizationSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The authorization call to credit control (billing) at each INVITE of an account.

    On by default: a prepaid account without credit gets 402 before any phone
    rings.  Turning it off is an explicit ``enabled = false`` (and `up` says so)."""
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0                       # 0 = read DATA_DIR/run/credit.port (written by the credit service)
    timeout_ms: int = 300
    retries: int = 1
    on_error: Literal["reject", "allow"] = "reject"   # no answer: refuse (503) or let the call go
    # several billing instances ([billing] partitioned): the billing database whose
    # billing_owner table says which instance owns an account; "" = one instance (port / credit.port)
    owners_url: str = ""
    owners_refresh_ms: int = 1000       # the owner table is read again this often (and after a timeout)


# --- floods and connection limits: [tcp] [pike] [overload] (docs/floods.md) --------------

class TcpSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Limits on SIP over TCP, per worker (each worker accepts connections of its own)."""
    idle_timeout_seconds: float = 300.0     # no byte received this long: the connection is closed
    message_timeout_seconds: float = 10.0   # a message once started must be complete this soon (slowloris, missing body)
    max_connections: int = 4096             # accepted connections at once; more are closed on accept
    max_connections_per_ip: int = 64        # accepted connections from one address (proxy.trusted_sources exempt)


class PikeSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Per-source request-rate limiting before parsing (OpenSIPS pike semantics), per worker."""
    enabled: bool = True
    sampling_seconds: float = 2.0           # the window requests are counted in, per source address
    density: int = 400                      # more requests than this in one window blocks the source
    block_seconds: float = 60.0             # a blocked source stays blocked this long after its last excess
    max_sources: int = 16384                # sources tracked at once, oldest forgotten first (bounds memory)
    policy: Literal["drop", "503"] = "drop"  # blocked requests: dropped, or answered 503 (a reflection: opt-in)
    publish_seconds: float = 1.0            # how often DATA_DIR/run/pike-worker-N.json is refreshed


class OverloadSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The load shedder: new requests refused while a worker's event loop is behind."""
    enabled: bool = True
    max_delay_ms: int = 200                 # delay (event-loop lag, UDP queueing) above which new requests are shed ...
    resume_delay_ms: int = 50               # ... until it is back below this
    min_busy_percent: int = 50              # ... only when this share of the time went into admitted requests
    sample_ms: int = 50                     # how often the delay is measured
    policy: Literal["503", "drop"] = "503"  # shed requests: 503 + Retry-After, or dropped
    retry_after_seconds: int = 5            # Retry-After of the 503
    max_answers_per_second: int = 500       # 503s sent by the pike and the shedder together; the rest are dropped


# --- the API process: [api] [clickhouse] ------------------------------------------------

class DnsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Next-hop resolution (RFC 3263 NAPTR/SRV/A), asynchronous, cached by TTL."""
    nameservers: tuple[str, ...] = ()     # IP addresses; empty = the system's (/etc/resolv.conf)
    port: int = 53                        # port of the nameservers above
    timeout_seconds: float = 2.0          # one lookup, retries included; then 503 to the caller
    min_ttl_seconds: float = 5.0          # answers are cached at least this long ...
    max_ttl_seconds: float = 3600.0       # ... and at most this long, whatever their TTL
    negative_ttl_seconds: float = 5.0     # NXDOMAIN / SERVFAIL / timeout cached this long, then retried
    cache_size: int = 10000               # cached records (oldest dropped first)
    max_in_flight: int = 1000             # lookups under way at once; beyond: 503 at once


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True                # `up` runs the API + CDR sink process
    host: str = "127.0.0.1"
    port: int = 8080


class MetricsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Prometheus metrics of every process of `up`, served at the API's /metrics (docs/metrics.md)."""
    enabled: bool = True
    interval_seconds: float = 1.0       # how often a worker copies its plain counters into them


class ClickHouseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Where CDRs and the ledger copy are stored, and how the sinks batch them."""
    backend: Literal["chdb", "server"] = "chdb"   # chdb: embedded, under the data dir
    path: str = ""                      # chdb: default DATA_DIR/clickhouse
    host: str = "127.0.0.1"             # server: native protocol
    port: int = 9000
    database: str = "sipledger"
    user: str = "default"
    password: str = ""
    consumer_group: str = "cdr-sink"
    batch_rows: int = 5000              # an insert happens when this many rows are buffered ...
    batch_ms: int = 200                 # ... or the oldest buffered row is this old

    def chdb_path(self, data_dir: str | os.PathLike) -> Path:
        return _under(data_dir, self.path, "clickhouse")


# --- the CDR processor: [cdr] ----------------------------------------------------------

class CdrSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True                # `up` runs a CDR processor
    silence_seconds: float = 4 * 3600.0 # a call with no events this long is closed (hangup_by "silence")
    batch_size: int = 1000              # events folded per batch (stream.take) ...
    batch_window_ms: int = 20           # ... or whatever came within this window
    records_topic: str = "cdr.records"  # where CdrLeg rows go (key = cdr_id, JSON)
    app_id: str = "sipledger-cdr"       # faust app id = consumer group; names the changelog topics
    partitions: int = 0                 # partitions of records_topic when created (0 = kafka.partitions)
    store_dir: str = ""                 # faust's local table dir (default DATA_DIR/cdr)
    finished_ttl_seconds: float = 600.0 # how long a finished call's marker stops late duplicates
    timer_seconds: float = 5.0          # how often silent calls and expired markers are looked for
    standby_replicas: int = 0           # faust standby table copies on other workers
    recovery_stall_seconds: float = 30.0  # a table recovery stuck this long exits the worker (cdr/recovery_watch.py)

    @property
    def silence_ms(self) -> int:
        return int(self.silence_seconds * 1000)

    def store_path(self, data_dir: str | os.PathLike) -> Path:
        return _under(data_dir, self.store_dir, "cdr")


# --- billing: [billing] [credit] [ledger] -------------------------------------------------

class BillingSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True                # `up` runs the billing service (credit control, ledger)
    db_url: str = ""                    # SQLAlchemy URL; default sqlite DATA_DIR/billing.sqlite
    currency: str = "EUR"               # default currency of imported rates that leave it empty
    timezone: str = "UTC"               # IANA zone of new rate plans (their weekday/time periods)
    default_plan: str = ""              # plan for accounts with no assignment ("" = unrated)
    # several billing instances on one shared db_url (PostgreSQL), each owning the accounts of
    # its billing.calls partitions (docs/billing-scale-out.md); false = one instance, flock on DATA_DIR
    partitioned: bool = False
    instance: str = ""                  # this instance's name in billing_owner ("" = node.name + pid)

    def database_url(self, data_dir: str | os.PathLike) -> str:
        return self.db_url or f"sqlite:///{_under(data_dir, '', 'billing.sqlite')}"


class CreditSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Credit control: the authorization server and live calls."""
    listen: str = "127.0.0.1"           # UDP address the authorization server binds
    port: int = 0                       # 0 = a free port, written to DATA_DIR/run/credit.port
    advertise: str = ""                 # address the proxy reaches `listen` at ("" = listen); partitioned billing
    reject_code: int = 402              # SIP code when the credit does not cover the first increment
    blocked_code: int = 402             # ... when the account is blocked
    no_rate_code: int = 403             # ... when no rate plan / rate applies to the destination
    unknown_account: Literal["allow", "reject"] = "allow"   # accounts without a billing account
    unknown_code: int = 403             # SIP code for unknown accounts when rejected
    reserve_seconds: int = 30           # a live call reserves credit this far ahead ...
    extend_ahead_seconds: float = 5.0   # ... and extends that long before its paid time runs out
    teardown_lead_ms: int = 300         # teardown goes out this long before the paid time ends
    teardown_retry_seconds: float = 5.0 # no end of call seen: send the teardown again (3 times)
    hold_seconds: float = 180.0         # an authorization holds the first increment this long unanswered
    cdr_wait_seconds: float = 600.0     # an ended call's reservation waits this long for its CDR
    max_call_seconds: float = 14400.0   # a call with no end event is considered over after this
    low_balance_thresholds: tuple[str, ...] = ("5", "1")   # balance.low notifications below these
    group_id: str = "sipledger-billing" # Kafka consumer group of the service

    @property
    def thresholds(self) -> tuple[Decimal, ...]:
        return tuple(sorted((Decimal(t) for t in self.low_balance_thresholds), reverse=True))


class LedgerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    events_topic: str = "ledger.events"         # every ledger event, key = account (outbox)
    calls_topic: str = "billing.calls"          # call events repartitioned by account
    notifications_topic: str = "billing.notifications"
    partitions: int = 0                         # of the topics above when created (0 = kafka.partitions)
    sink_group: str = "ledger-sink"             # the API process' ClickHouse sink consumer group
    repair_seconds: float = 30.0                # the API process re-checks ClickHouse against SQL this often


# --- RADIUS accounting: [radius] -------------------------------------------------------

MAX_RADIUS_IN_FLIGHT = 255       # one RADIUS Identifier space (256) per server socket


class RadiusServer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str
    secret: str
    port: int = 1813


class RadiusSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    servers: tuple[RadiusServer, ...] = ()  # in failover order; none = RADIUS accounting off
    timeout: float = 2.0                # seconds to wait for an Accounting-Response, per send
    retries: int = 2                    # resends to one server before failing over
    dead_time_s: float = 30.0           # a server that failed is skipped this long
    max_in_flight: int = 32             # requests awaiting a response at once
    # "udp": a datagram per request (RFC 2866); "tcp": RADIUS over TCP (RFC 6613), one
    # connection per server, many requests per write (the server must listen on TCP)
    transport: Literal["udp", "tcp"] = "udp"
    nas_ip: str = "127.0.0.1"           # NAS-IP-Address
    nas_identifier: str = ""            # NAS-Identifier ("" = node.name)
    interim_interval_s: int = 0         # Interim-Update every N s of an answered call (0 = off)
    send_failed: bool = False           # Acct-Status-Type Failed (15) for unanswered calls
    multileg: Literal["per-leg", "opensips"] = "per-leg"
    opensips_attributes: bool = True    # Sip-* attributes (OpenSIPS dictionary)
    cisco_attributes: bool = True       # h323-* and Cisco-AVPair VSAs
    spool_dir: str = ""                 # durable queue + call state (default DATA_DIR/radius)
    group_id: str = "sipledger-radius"  # Kafka consumer group
    silence_seconds: float = 4 * 3600.0 # a call with no events this long is closed (Lost-Service)
    finished_ttl_seconds: float = 600.0
    dedupe_retention_s: float = 86400.0 # how long acknowledged record keys block re-sending
    batch_size: int = 1000              # events per consumer fetch
    dictionary: str = ""                # pyrad dictionary (default: radius/dictionary)

    @property
    def enabled(self) -> bool:
        return bool(self.servers)

    def spool_path(self, data_dir: str | os.PathLike) -> Path:
        return _under(data_dir, self.spool_dir, "radius")


# --- the media relay: [media] [[media.rtpengines]] ------------------------------------

class RtpengineSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str = "udp:127.0.0.1:2223"     # its ng control socket: udp:HOST:PORT (an IP address, no DNS)
    weight: int = 1                     # share of new calls; 0 = standby, used only when named

    def address(self) -> tuple[str, int] | None:
        """(host, port) of ``url``, or None when it is not udp:IP:PORT."""
        scheme, _, rest = self.url.partition(":")
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if scheme != "udp" or not port.isdigit() or not _addresses((host,)) or not _port(int(port)):
            return None
        return host, int(port)


MEDIA_POLICIES = ("nat", "always")


class MediaSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """[media]: relay calls' RTP through rtpengine (docs/media.md)."""
    enabled: bool = False               # relay media through rtpengine
    rtpengines: tuple[RtpengineSettings, ...] = (RtpengineSettings(),)   # [[media.rtpengines]]
    timeout_seconds: float = 1.0        # one ng try waits this long for its reply ...
    retries: int = 2                    # ... resent this many times, then the relay is down
    recheck_seconds: float = 10.0       # a down relay is pinged this often until it answers
    # "nat": relay a call only when the caller or a target is behind a NAT; "always": every call
    policy: str = "nat"
    # `sipledger up` starts a local rtpengine itself (then it is the only one: rtpengines is ignored)
    launch: bool = True
    interface: str = ""                 # media address the launched rtpengine announces ("" = the proxy's)
    # the launched rtpengine's media ports: below Linux's ephemeral range (32768-60999) so
    # no client socket of this host can sit on a port rtpengine hands out
    port_min: int = 16384
    port_max: int = 24575
    binary: str = "/usr/bin/rtpengine"
    rtp_timeout_seconds: float = 60.0   # both parties silent this long: the proxy ends the call
    one_way_timeout_seconds: float = 30.0   # one party silent this long while the other sends: ends it
    poll_seconds: float = 5.0           # a live relayed call's counters are queried this often
    max_polls_in_flight: int = 64       # per worker: polls beyond this wait for the next round


# --- NAT keep-alives and session timers: [nat] [session_timer] (docs/nat.md) -------------

class NatSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    keepalive_seconds: float = 30.0     # each NATed binding is pinged this often (its pinhole stays open)
    keepalive_failures: int = 3         # unanswered pings in a row before the binding is dropped
    keepalive_method: Literal["OPTIONS", "CRLF"] = "OPTIONS"   # UDP pings; CRLF opens the pinhole but
                                        # detects nothing (no reply): no drops.  TCP always gets CRLF CRLF


class SessionTimerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True                # honour Session-Expires (RFC 4028): end dialogs never refreshed
    insert: bool = False                # add Session-Expires/Min-SE to INVITEs that carry none
    session_expires_seconds: int = 1800 # the Session-Expires inserted
    min_se_seconds: int = 90            # our Min-SE: a smaller Session-Expires gets 422


# --- the whole file ----------------------------------------------------------------------

class LogSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """[logging]: service logs under DATA_DIR/logs (proxy/infra/logs.py)."""
    max_bytes: int = 10 * 1024 * 1024   # a log file is rotated at this size
    backups: int = 5                    # rotated files kept (name.log.1 … name.log.N)
    repeat_burst: int = 10              # lines with the same message key let through per interval …
    repeat_interval_s: float = 60.0     # … then one "suppressed N similar" line per interval


class FraudSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """[fraud]: OpenSIPS-style fraud detection (proxy/core/fraud.py, docs/fraud.md).
    Nothing is checked until a profile has rules (`sipledger fraud rule add`)."""
    profile: str = "default"            # the profile ctx.fraud_check() uses when given none
    block_critical: bool = True         # a critical breach at INVITE is refused with 403
    block_account: bool = False         # a critical breach also blocks the caller's billing account


class TraceSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """[trace]: SIP capture (siptrace) and HEP export (docs/trace.md)."""
    enabled: bool = False               # capture every call's messages (else only calls ctx.trace() flagged)
    sample: float = 1.0                 # share of calls captured when enabled (by Call-ID hash), 0..1
    store: bool = True                  # captured messages go to Kafka and the sip_trace table
    topic: str = "sip.trace"            # Kafka topic of the captured messages (key = Call-ID)
    max_pending_batches: int = 2000     # per worker: batches (<= 64 captures) waiting for Kafka; then drop (counted)
    hep: tuple[str, ...] = ()           # HEP v3 collectors, "udp:IP:PORT" (HOMER, sngrep)
    hep_capture_id: int = 2001          # HEP capture agent id
    hep_password: str = ""              # HEP auth key ("" = none)
    retention_days: int = 7             # sip_trace partitions (days) older than this are dropped
    flag_seconds: float = 14400.0       # a call flagged by ctx.trace() stays captured this long


class ArchiveSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """[archive]: the durable event archive, ClickHouse table `events` (docs/operations.md)."""
    enabled: bool = True                # the API process archives sip.events, ledger.events, call.control
    group: str = "archive"              # the archiver's consumer group
    # Embedded broker (memory only): the proxy keeps a published event in its
    # outbox until the archive has it, and publishes it again after a broker restart.
    outbox_until_archived: bool = True
    outbox_keep_rows: int = 2_000_000   # per worker: published rows kept at most (oldest go first, logged)
    # CDR repair: calls the archive shows over (older than the grace) without a
    # CDR are folded from the archive and their rows published to cdr.records.
    repair_seconds: float = 30.0        # how often (0 = never)
    repair_grace_seconds: float = 30.0  # the live processor's time to write a CDR first
    repair_lookback_seconds: float = 7200.0  # calls that ended this far back are checked
    # The archiver's inserts (0: [clickhouse] batch_rows / batch_ms).  Larger
    # batches cost less CPU (each chdb insert has a fixed cost and leaves a part
    # to merge) but hold chdb's single writer longer, which the CDR sink then
    # waits for: 30000 / 1000 ms cut merges ~10 us per call at 5,000 calls/s and
    # tripled the CDR sink's p99 (docs/performance.md).
    batch_rows: int = 0                 # an insert happens when this many records are buffered ...
    batch_ms: int = 0                   # ... or the oldest buffered record is this old


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: NodeSettings = NodeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    proxy: ProxySettings = ProxySettings()
    auth: AuthSettings = AuthSettings()
    registrar: RegistrarSettings = RegistrarSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    authorization: AuthorizationSettings = AuthorizationSettings()
    dns: DnsSettings = DnsSettings()
    tcp: TcpSettings = TcpSettings()
    pike: PikeSettings = PikeSettings()
    overload: OverloadSettings = OverloadSettings()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    cdr: CdrSettings = CdrSettings()
    billing: BillingSettings = BillingSettings()
    credit: CreditSettings = CreditSettings()
    ledger: LedgerSettings = LedgerSettings()
    radius: RadiusSettings = RadiusSettings()
    media: MediaSettings = MediaSettings()
    nat: NatSettings = NatSettings()
    session_timer: SessionTimerSettings = SessionTimerSettings()
    logging: LogSettings = LogSettings()
    fraud: FraudSettings = FraudSettings()
    trace: TraceSettings = TraceSettings()
    archive: ArchiveSettings = ArchiveSettings()

    def with_bootstrap(self, bootstrap: str) -> "Config":
        """The same config pointed at a running broker (what `up` hands its children)."""
        return msgspec.structs.replace(self, kafka=msgspec.structs.replace(
            self.kafka, bootstrap_servers=bootstrap))


def _under(data_dir: str | os.PathLike, configured: str, default: str) -> Path:
    """A configured path (relative ones under the data dir) or the default under the data dir."""
    return (Path(data_dir) / (configured or default)).resolve()


def load(config_file: str | os.PathLike | None,
         overrides: dict[str, dict[str, Any]] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge the environment's ``SIPLEDGER__SECTION__KEY`` variables
    (``environment_overrides``), then command-line ``overrides``
    ({"proxy": {"sip_port": 5070}}), and validate the whole; raise
    ``ConfigError`` naming the first bad key."""
    source = str(config_file or "defaults")
    raw = read_toml(config_file)
    env = environment_overrides(os.environ if environ is None else environ)
    for section, values in [*env.items(), *(overrides or {}).items()]:
        merged = dict(raw.get(section) or {}) if isinstance(raw.get(section, {}), dict) else {}
        merged.update({k: v for k, v in values.items() if v is not None})
        raw[section] = merged
    config = convert(raw, Config, source=source)
    for key, ok, rule in checks(config):
        if not ok:
            section, _, name = key.partition("[")[0].partition(".")
            if name in env.get(section, {}):     # the value came from a variable: name it
                source = f"environment {ENV_OVERRIDE_PREFIX}{section.upper()}__{name.upper()}"
            raise ConfigError(f"{source}: key '{key}': {rule}")
    return config


# --- environment overrides: SIPLEDGER__SECTION__KEY=value ----------------------------------

ENV_OVERRIDE_PREFIX = "SIPLEDGER__"


def environment_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} from ``SIPLEDGER__SECTION__KEY`` variables (containers
    configure one key without a file of their own; compose/README.md).

    A key whose type is a string (or a choice of strings) takes the value as it
    is; any other is parsed as a TOML value (``5060``, ``true``, ``["a", "b"]``,
    ``[{host = "10.0.0.5", secret = "s"}]``).  Each variable is checked alone
    against the schema, so an unknown key or a wrong type names the variable;
    ``load`` then validates the whole with ``checks()``."""
    found: dict[str, dict[str, Any]] = {}
    names = sorted(name for name in environ if name.upper().startswith(ENV_OVERRIDE_PREFIX))
    sections = _hints(Config) if names else {}
    for name in names:
        where = f"environment {name}"
        parts = name[len(ENV_OVERRIDE_PREFIX):].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{where}: must be {ENV_OVERRIDE_PREFIX}SECTION__KEY")
        section, key = parts
        if section not in sections:
            raise ConfigError(f"{where}: unknown section '{section}'")
        kind = _hints(sections[section]).get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key '{section}.{key}'")
        text = environ[name]
        if _is_text(kind):
            value: Any = text
        else:
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                raise ConfigError(f"{where}: key '{section}.{key}': {text!r} is not a TOML value") from None
        convert({section: {key: value}}, Config, source=where)
        found.setdefault(section, {})[key] = value
    return found


def _hints(struct: type) -> dict[str, Any]:
    return typing.get_type_hints(struct, include_extras=False)


def _is_text(kind: Any) -> bool:
    """str, or a Literal of strings: the variable's value is taken as it is."""
    if kind is str:
        return True
    return typing.get_origin(kind) is Literal and all(isinstance(arg, str) for arg in typing.get_args(kind))


# --- rules a type cannot express -----------------------------------------------------------

_PLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _port(value: int) -> bool:
    return 0 < value < 65536


def _sip_error(code: int) -> bool:
    return 400 <= code <= 699


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return False
    return True


def _decimals(values: tuple[str, ...]) -> bool:
    try:
        return all(Decimal(v).is_finite() for v in values)
    except (InvalidOperation, TypeError):
        return False


def _cidrs(values: tuple[str, ...]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _addresses(values: tuple[str, ...]) -> bool:
    try:
        for value in values:
            ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _algorithms(values: tuple[str, ...]) -> bool:
    return bool(values) and set(values) <= set(DIGEST_ALGORITHMS) and len(set(values)) == len(values)


def _regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return bool(pattern) and len(pattern) <= 256


def hep_address(url: str) -> tuple[str, int] | None:
    """("IP", port) of a HEP collector "udp:IP:PORT" (IPv6 as udp:[::1]:9060), else None."""
    scheme, _, rest = url.partition(":")
    host, _, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        return None
    return (host, number) if scheme == "udp" and 0 < number < 65536 else None


def checks(c: Config) -> list[tuple[str, bool, str]]:
    """(key, ok, rule) for every rule a type cannot express, in file order."""
    credit, radius = c.credit, c.radius
    result = [
        ("kafka.partitions", c.kafka.partitions >= 1, "must be >= 1"),
        ("kafka.replication_factor", c.kafka.replication_factor >= 1, "must be >= 1"),
        ("kafka.embedded_port", 0 <= c.kafka.embedded_port < 65536, "must be 0..65535 (0 = any free port)"),
        ("kafka.bootstrap_servers", c.kafka.mode == "embedded" or bool(c.kafka.bootstrap_servers),
         "required when kafka.mode = \"external\""),
        ("topics.sip_events", bool(c.topics.sip_events), "must not be empty"),
        ("topics.call_control", bool(c.topics.call_control), "must not be empty"),
        ("proxy.sip_port", _port(c.proxy.sip_port), "must be 1..65535"),
        ("proxy.workers", 1 <= c.proxy.workers <= 64, "must be 1..64"),
        ("proxy.worker_port_base", c.proxy.worker_port_base == 0 or (
            1024 <= c.proxy.worker_port_base <= 65536 - c.proxy.workers
            and not 0 <= c.proxy.sip_port - c.proxy.worker_port_base < c.proxy.workers),
         "must be 0 (any free port) or 1024..65536-proxy.workers, its range clear of proxy.sip_port"),
        ("fraud.profile", bool(c.fraud.profile) and len(c.fraud.profile) <= 64, "must be 1..64 characters"),
        ("proxy.max_dialog_seconds", c.proxy.max_dialog_seconds > 0, "must be > 0"),
        ("proxy.invite_timeout_seconds", c.proxy.invite_timeout_seconds > 0, "must be > 0"),
        ("proxy.trusted_sources", _cidrs(c.proxy.trusted_sources), "must be CIDRs like 192.0.2.0/24"),
        ("proxy.forward_depth", 0 <= c.proxy.forward_depth <= 20, "must be 0..20"),
        ("proxy.gateway_probe_seconds", c.proxy.gateway_probe_seconds > 0, "must be > 0"),
        ("proxy.max_forwards", 1 <= c.proxy.max_forwards <= 255, "must be 1..255"),
        ("registrar.location_url", c.registrar.location_url.split(":", 1)[0].split("+", 1)[0]
         in ("", "sqlite", "postgresql"), "must be a sqlite:// or postgresql+psycopg:// URL (or empty)"),
        ("registrar.location_url", not c.registrar.location_url
         or (c.proxy.advertised_host or c.proxy.listen) not in ("0.0.0.0", "::"),
         "a shared store needs proxy.advertised_host (the address other instances reach this one at)"),
        ("dns.nameservers", _addresses(c.dns.nameservers), "must be IP addresses"),
        ("dns.port", _port(c.dns.port), "must be 1..65535"),
        ("dns.timeout_seconds", 0 < c.dns.timeout_seconds <= 30, "must be > 0 and <= 30"),
        ("dns.min_ttl_seconds", 0 <= c.dns.min_ttl_seconds <= c.dns.max_ttl_seconds,
         "must be 0..max_ttl_seconds"),
        ("dns.negative_ttl_seconds", 0 < c.dns.negative_ttl_seconds <= 3600, "must be > 0 and <= 3600"),
        ("dns.cache_size", c.dns.cache_size >= 1, "must be >= 1"),
        ("dns.max_in_flight", c.dns.max_in_flight >= 1, "must be >= 1"),
        ("proxy.t1", 0 < c.proxy.t1 <= c.proxy.t2, "must be > 0 and <= proxy.t2"),
        ("proxy.outbox_flush_ms", 1 <= c.proxy.outbox_flush_ms <= 10_000, "must be 1..10000"),
        ("proxy.publish_interval_ms", 0 <= c.proxy.publish_interval_ms <= 1_000, "must be 0..1000"),
        ("proxy.max_message_bytes", 1024 <= c.proxy.max_message_bytes <= 16 * 1024 * 1024,
         "must be 1024..16777216"),
        ("proxy.max_header_bytes", 512 <= c.proxy.max_header_bytes <= c.proxy.max_message_bytes,
         "must be 512..proxy.max_message_bytes"),
        ("proxy.max_headers", 16 <= c.proxy.max_headers <= 10_000, "must be 16..10000"),
        ("logging.max_bytes", c.logging.max_bytes >= 64 * 1024, "must be >= 65536"),
        ("logging.backups", 1 <= c.logging.backups <= 100, "must be 1..100"),
        ("logging.repeat_burst", c.logging.repeat_burst >= 1, "must be >= 1"),
        ("logging.repeat_interval_s", c.logging.repeat_interval_s > 0, "must be > 0"),
        ("auth.nonce_ttl_seconds", c.auth.nonce_ttl_seconds > 0, "must be > 0"),
        ("auth.algorithms", _algorithms(c.auth.algorithms), "must list MD5 and/or SHA-256, each once"),
        ("auth.lockout_failures", c.auth.lockout_failures >= 0, "must be >= 0 (0 = never)"),
        ("auth.lockout_user_failures", c.auth.lockout_user_failures >= 0, "must be >= 0 (0 = never)"),
        ("auth.lockout_window_s", c.auth.lockout_window_s > 0, "must be > 0"),
        ("auth.lockout_s", c.auth.lockout_s > 0, "must be > 0"),
        ("auth.lockout_max_entries", 100 <= c.auth.lockout_max_entries <= 10_000_000, "must be 100..10000000"),
        ("provisioning.reload_seconds", c.provisioning.reload_seconds > 0, "must be > 0"),
        ("authorization.port", 0 <= c.authorization.port < 65536, "must be 0..65535 (0 = the credit service's)"),
        ("authorization.timeout_ms", 1 <= c.authorization.timeout_ms <= 10_000, "must be 1..10000"),
        ("authorization.retries", 0 <= c.authorization.retries <= 5, "must be 0..5"),
        ("authorization.owners_refresh_ms", 100 <= c.authorization.owners_refresh_ms <= 60_000,
         "must be 100..60000"),
        ("tcp.idle_timeout_seconds", c.tcp.idle_timeout_seconds > 0, "must be > 0"),
        ("tcp.message_timeout_seconds", c.tcp.message_timeout_seconds > 0, "must be > 0"),
        ("tcp.max_connections", c.tcp.max_connections >= 1, "must be >= 1"),
        ("tcp.max_connections_per_ip", 1 <= c.tcp.max_connections_per_ip <= c.tcp.max_connections,
         "must be 1..tcp.max_connections"),
        ("pike.sampling_seconds", c.pike.sampling_seconds > 0, "must be > 0"),
        ("pike.density", c.pike.density >= 1, "must be >= 1"),
        ("pike.block_seconds", c.pike.block_seconds > 0, "must be > 0"),
        ("pike.max_sources", 1 <= c.pike.max_sources <= 10_000_000, "must be 1..10000000"),
        ("pike.publish_seconds", c.pike.publish_seconds > 0, "must be > 0"),
        ("overload.max_delay_ms", c.overload.max_delay_ms >= 1, "must be >= 1"),
        ("overload.resume_delay_ms", 0 <= c.overload.resume_delay_ms <= c.overload.max_delay_ms,
         "must be 0..overload.max_delay_ms"),
        ("overload.min_busy_percent", 0 <= c.overload.min_busy_percent <= 100, "must be 0..100"),
        ("overload.sample_ms", 1 <= c.overload.sample_ms <= 10_000, "must be 1..10000"),
        ("overload.max_answers_per_second", c.overload.max_answers_per_second >= 0, "must be >= 0 (0 = drop all)"),
        ("overload.retry_after_seconds", 0 <= c.overload.retry_after_seconds <= 3600, "must be 0..3600"),
        ("api.port", _port(c.api.port), "must be 1..65535"),
        ("clickhouse.port", _port(c.clickhouse.port), "must be 1..65535"),
        ("clickhouse.database", _IDENTIFIER.fullmatch(c.clickhouse.database) is not None,
         "must be a plain identifier (letters, digits, _)"),
        ("clickhouse.batch_rows", 1 <= c.clickhouse.batch_rows <= 1_000_000, "must be 1..1000000"),
        ("clickhouse.batch_ms", 1 <= c.clickhouse.batch_ms <= 60_000, "must be 1..60000"),
        ("archive.batch_rows", 0 <= c.archive.batch_rows <= 1_000_000, "must be 0..1000000 (0: as [clickhouse])"),
        ("archive.batch_ms", 0 <= c.archive.batch_ms <= 60_000, "must be 0..60000 (0: as [clickhouse])"),
        ("cdr.silence_seconds", c.cdr.silence_seconds > 0, "must be > 0"),
        ("cdr.batch_size", 1 <= c.cdr.batch_size <= 100_000, "must be 1..100000"),
        ("cdr.batch_window_ms", 1 <= c.cdr.batch_window_ms <= 60_000, "must be 1..60000"),
        ("cdr.records_topic", bool(c.cdr.records_topic), "must not be empty"),
        ("cdr.app_id", bool(c.cdr.app_id), "must not be empty"),
        ("cdr.partitions", c.cdr.partitions >= 0, "must be >= 0"),
        ("cdr.finished_ttl_seconds", c.cdr.finished_ttl_seconds > 0, "must be > 0"),
        ("cdr.timer_seconds", c.cdr.timer_seconds > 0, "must be > 0"),
        ("cdr.standby_replicas", c.cdr.standby_replicas >= 0, "must be >= 0"),
        ("cdr.recovery_stall_seconds", c.cdr.recovery_stall_seconds >= 5, "must be >= 5 (a recovery may pause a few seconds)"),
        ("billing.currency", _CURRENCY.match(c.billing.currency) is not None,
         "must be an ISO 4217 code like EUR"),
        ("billing.partitioned", not c.billing.partitioned or bool(c.billing.db_url),
         "needs [billing] db_url: a database every instance shares (PostgreSQL)"),
        ("billing.timezone", _is_zone(c.billing.timezone), "must be an IANA zone like UTC or Europe/Berlin"),
        ("billing.default_plan", not c.billing.default_plan or _PLAN_NAME.match(c.billing.default_plan) is not None,
         "must be 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit)"),
        ("media.rtpengines", bool(c.media.rtpengines) or not c.media.enabled, "must list one rtpengine at least"),
        ("media.rtpengines", len({r.url for r in c.media.rtpengines}) == len(c.media.rtpengines),
         "must not repeat an rtpengine"),
        ("media.rtpengines", not c.media.enabled or any(r.weight > 0 for r in c.media.rtpengines),
         "one rtpengine at least must have a weight > 0"),
        ("media.timeout_seconds", 0.05 <= c.media.timeout_seconds <= 10, "must be 0.05..10"),
        ("media.retries", 0 <= c.media.retries <= 5, "must be 0..5"),
        ("media.recheck_seconds", c.media.recheck_seconds > 0, "must be > 0"),
        ("media.policy", c.media.policy in MEDIA_POLICIES, "must be \"nat\" or \"always\""),
        ("media.interface", not c.media.interface or _addresses((c.media.interface,)),
         "must be an IP address (or empty for the proxy's own)"),
        ("media.port_min", 1024 <= c.media.port_min <= 65535, "must be 1024..65535"),
        ("media.port_max", c.media.port_min + 1 <= c.media.port_max <= 65535,
         "must be above port_min and at most 65535"),
        ("media.binary", bool(c.media.binary), "must not be empty"),
        ("media.rtp_timeout_seconds", 1 <= c.media.rtp_timeout_seconds <= 86400, "must be 1..86400"),
        ("media.one_way_timeout_seconds", 1 <= c.media.one_way_timeout_seconds <= 86400,
         "must be 1..86400"),
        ("media.poll_seconds", 0.1 <= c.media.poll_seconds <= min(c.media.rtp_timeout_seconds,
                                                                   c.media.one_way_timeout_seconds),
         "must be 0.1..the smaller of the two media timeouts"),
        ("media.max_polls_in_flight", 1 <= c.media.max_polls_in_flight <= 4096, "must be 1..4096"),
        ("metrics.interval_seconds", 0.1 <= c.metrics.interval_seconds <= 60, "must be 0.1..60"),
        ("nat.keepalive_seconds", 0.1 <= c.nat.keepalive_seconds <= 3600, "must be 0.1..3600"),
        ("nat.keepalive_failures", 1 <= c.nat.keepalive_failures <= 100, "must be 1..100"),
        ("session_timer.min_se_seconds", 90 <= c.session_timer.min_se_seconds <= 86400,
         "must be 90..86400 (RFC 4028: Min-SE is never below 90)"),
        ("session_timer.session_expires_seconds",
         c.session_timer.min_se_seconds <= c.session_timer.session_expires_seconds <= 86400,
         "must be session_timer.min_se_seconds..86400"),
        ("credit.port", 0 <= credit.port < 65536, "must be 0..65535 (0 = any free port)"),
        ("credit.reject_code", _sip_error(credit.reject_code), "must be a SIP error code 400..699"),
        ("credit.blocked_code", _sip_error(credit.blocked_code), "must be a SIP error code 400..699"),
        ("credit.no_rate_code", _sip_error(credit.no_rate_code), "must be a SIP error code 400..699"),
        ("credit.unknown_code", _sip_error(credit.unknown_code), "must be a SIP error code 400..699"),
        ("credit.reserve_seconds", 1 <= credit.reserve_seconds <= 86400, "must be 1..86400"),
        ("credit.extend_ahead_seconds", 0 < credit.extend_ahead_seconds < credit.reserve_seconds,
         "must be > 0 and below reserve_seconds"),
        ("credit.teardown_lead_ms", 0 <= credit.teardown_lead_ms <= 5000, "must be 0..5000"),
        ("credit.teardown_retry_seconds", credit.teardown_retry_seconds > 0, "must be > 0"),
        ("credit.hold_seconds", credit.hold_seconds > 0, "must be > 0"),
        ("credit.cdr_wait_seconds", credit.cdr_wait_seconds > 0, "must be > 0"),
        ("credit.max_call_seconds", credit.max_call_seconds > 0, "must be > 0"),
        ("credit.low_balance_thresholds", _decimals(credit.low_balance_thresholds),
         "must be decimal strings like \"5\""),
        ("ledger.events_topic", bool(c.ledger.events_topic), "must not be empty"),
        ("ledger.calls_topic", bool(c.ledger.calls_topic), "must not be empty"),
        ("ledger.notifications_topic", bool(c.ledger.notifications_topic), "must not be empty"),
        ("ledger.partitions", c.ledger.partitions >= 0, "must be >= 0"),
        ("ledger.repair_seconds", c.ledger.repair_seconds > 0, "must be > 0"),
        ("radius.timeout", radius.timeout > 0, "must be > 0"),
        ("radius.retries", 0 <= radius.retries <= 10, "must be 0..10"),
        ("radius.dead_time_s", radius.dead_time_s >= 0, "must be >= 0"),
        ("radius.max_in_flight", 1 <= radius.max_in_flight <= MAX_RADIUS_IN_FLIGHT,
         f"must be 1..{MAX_RADIUS_IN_FLIGHT}"),
        ("radius.nas_ip", _is_ipv4(radius.nas_ip), "must be an IPv4 address"),
        ("radius.interim_interval_s", radius.interim_interval_s >= 0, "must be >= 0 (0 = off)"),
        ("radius.group_id", bool(radius.group_id), "must not be empty"),
        ("radius.silence_seconds", radius.silence_seconds > 0, "must be > 0"),
        ("radius.finished_ttl_seconds", radius.finished_ttl_seconds > 0, "must be > 0"),
        ("radius.dedupe_retention_s", radius.dedupe_retention_s >= 0, "must be >= 0"),
        ("radius.batch_size", 1 <= radius.batch_size <= 100_000, "must be 1..100000"),
    ]
    for i, rule in enumerate(c.auth.per_domain):
        result += [
            (f"auth.per_domain[{i}].domain", bool(rule.domain.strip()), "must not be empty"),
            (f"auth.per_domain[{i}].algorithms", _algorithms(rule.algorithms),
             "must list MD5 and/or SHA-256, each once"),
        ]
    for i, agent in enumerate(c.auth.per_user_agent):
        result += [
            (f"auth.per_user_agent[{i}].match", _regex(agent.match), "must be a valid, non-empty regular expression"),
            (f"auth.per_user_agent[{i}].algorithms", _algorithms(agent.algorithms),
             "must list MD5 and/or SHA-256, each once"),
        ]
    for i, server in enumerate(radius.servers):
        result += [
            (f"radius.servers[{i}].host", bool(server.host), "must not be empty"),
            (f"radius.servers[{i}].port", _port(server.port), "must be 1..65535"),
            (f"radius.servers[{i}].secret", bool(server.secret), "must not be empty"),
        ]
    result += [
        ("trace.sample", 0.0 <= c.trace.sample <= 1.0, "must be 0..1"),
        ("trace.topic", bool(c.trace.topic), "must not be empty"),
        ("trace.max_pending_batches", c.trace.max_pending_batches >= 0, "must be >= 0"),
        ("trace.hep", all(hep_address(h) is not None for h in c.trace.hep),
         "must be udp:IP:PORT, e.g. udp:127.0.0.1:9060"),
        ("trace.hep_capture_id", 0 <= c.trace.hep_capture_id < 2 ** 32, "must be 0..4294967295"),
        ("trace.retention_days", c.trace.retention_days >= 1, "must be >= 1"),
        ("trace.flag_seconds", c.trace.flag_seconds > 0, "must be > 0"),
        ("archive.group", bool(c.archive.group), "must not be empty"),
        ("archive.outbox_keep_rows", c.archive.outbox_keep_rows >= 1000, "must be >= 1000"),
        ("archive.repair_seconds", c.archive.repair_seconds >= 0, "must be >= 0 (0 = off)"),
        ("archive.repair_grace_seconds", c.archive.repair_grace_seconds >= 1, "must be >= 1"),
        ("archive.repair_lookback_seconds", c.archive.repair_lookback_seconds > c.archive.repair_grace_seconds,
         "must be > repair_grace_seconds"),
    ]
    for i, relay in enumerate(c.media.rtpengines):
        result += [
            (f"media.rtpengines[{i}].url", relay.address() is not None, "must be udp:IP:PORT, e.g. udp:127.0.0.1:2223"),
            (f"media.rtpengines[{i}].weight", 0 <= relay.weight <= 1000, "must be 0..1000"),
        ]
    return result


# --- reading the file ------------------------------------------------------------------------

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
