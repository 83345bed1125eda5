"""One TOML file, every key defaulted, and bad files explained in one line naming the key.

Every configuration test lives here: ``proxy/infra/config.py`` is the one
configuration module with the one loader, ``load()``, for every section of
every program."""
from __future__ import annotations

import re

import msgspec
import pytest

from proxy.infra.config import Config, ConfigError, checks, load


def write(tmp_path, text):
    path = tmp_path / "sipledger.toml"
    path.write_text(text)
    return path


def key_of(message: str) -> str:
    """The key a ConfigError names ("...: key 'proxy.sip_port': ...")."""
    assert "\n" not in message, message
    return message.split("key '", 1)[1].split("'", 1)[0]


SECTIONS = [(field.name, field.type) for field in msgspec.structs.fields(Config)]
KEYS = [(section, field.name) for section, kind in SECTIONS for field in msgspec.structs.fields(kind)]


# --- the loader -----------------------------------------------------------------------------

def test_defaults_without_a_file():
    config = load(None)
    assert config == Config()
    assert config.proxy.max_dialog_seconds == 10800 and config.topics.sip_events == "sip.events"


def test_defaults_pass_every_rule():
    assert [key for key, ok, _ in checks(Config()) if not ok] == []


def test_values_are_read(tmp_path):
    config = load(write(tmp_path, '[proxy]\nsip_port = 5070\nworkers = 2\ntrusted_sources = ["10.0.0.0/8"]\n'
                                  '[kafka]\nmode = "external"\nbootstrap_servers = "k1:9092"\nclient_profile = "kafka"\n'))
    assert config.proxy.sip_port == 5070 and config.proxy.trusted_sources == ("10.0.0.0/8",)
    assert config.kafka.bootstrap_servers == "k1:9092"


@pytest.mark.parametrize("text, key", [
    ('[proxy]\nsip_port = "x"\n', "proxy.sip_port"),
    ("[proxy]\nworkerz = 2\n", "proxy.workerz"),
    ("[nosuch]\na = 1\n", "nosuch"),
    ("[proxy]\nsip_port = 70000\n", "proxy.sip_port"),
    ('[kafka]\nmode = "external"\n', "kafka.bootstrap_servers"),
    ('[kafka]\nclient_profile = "redpanda"\n', "kafka.client_profile"),
    ("[registrar]\nmin_expires = 0\n", "registrar"),
])
def test_bad_values_name_the_key_in_one_line(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    message = str(err.value)
    assert f"key '{key}'" in message and "\n" not in message


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(write(tmp_path, "[proxy\n"))
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "absent.toml")


# --- every section goes through the one loader ---------------------------------------------

@pytest.mark.parametrize("section, key", KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_every_key_of_every_section_is_type_checked(section, key):
    """A table where a value belongs is refused for each key of each section, naming it."""
    with pytest.raises(ConfigError) as err:
        load(None, {section: {key: {"not": "a value"}}})
    assert key_of(str(err.value)).startswith(f"{section}.{key}"), err.value


@pytest.mark.parametrize("section", [name for name, _ in SECTIONS])
def test_unknown_keys_are_named_in_every_section(tmp_path, section):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, f"[{section}]\nno_such_key = 1\n"))
    assert str(err.value).endswith(f"key '{section}.no_such_key': unknown key"), err.value


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="key 'billling': unknown key"):
        load(write(tmp_path, "[billling]\nenabled = false\n"))


@pytest.mark.parametrize("section, values, key", [
    ("kafka", {"partitions": 0}, "kafka.partitions"),
    ("topics", {"sip_events": ""}, "topics.sip_events"),
    ("proxy", {"sip_port": 70000}, "proxy.sip_port"),
    ("proxy", {"t1": 5.0, "t2": 4.0}, "proxy.t1"),
    ("auth", {"algorithms": ["SHA-1"]}, "auth.algorithms"),
    ("registrar", {"max_contacts": -1}, "registrar"),
    ("provisioning", {"reload_seconds": 0}, "provisioning.reload_seconds"),
    ("authorization", {"timeout_ms": 0}, "authorization.timeout_ms"),
    ("api", {"port": 0}, "api.port"),
    ("clickhouse", {"database": "cdr-store"}, "clickhouse.database"),
    ("cdr", {"batch_size": 0}, "cdr.batch_size"),
    ("billing", {"timezone": "Mars/Olympus"}, "billing.timezone"),
    ("credit", {"extend_ahead_seconds": 30.0}, "credit.extend_ahead_seconds"),
    ("ledger", {"repair_seconds": 0}, "ledger.repair_seconds"),
    ("radius", {"max_in_flight": 300}, "radius.max_in_flight"),
    ("dns", {"nameservers": ["ns1.example"]}, "dns.nameservers"),
    ("dns", {"negative_ttl_seconds": 0}, "dns.negative_ttl_seconds"),
])
def test_rules_of_every_section(section, values, key):
    """The rules a type cannot express, one per section, through ``load``'s overrides."""
    with pytest.raises(ConfigError) as err:
        load(None, {section: values})
    assert key_of(str(err.value)) == key, err.value


def test_every_rule_names_a_real_key():
    names = {f"{section}.{key}" for section, key in KEYS}
    for key, _, _ in checks(Config()):
        # an entry of an array of tables is named array[i].field: the array is the real key
        assert re.sub(r"\[\d+\]\.\w+$", "", key) in names, key


# --- command-line overrides ------------------------------------------------------------------

def test_an_override_is_validated_and_named():
    with pytest.raises(ConfigError) as err:
        load(None, {"proxy": {"sip_port": 70000}})
    assert str(err.value) == "defaults: key 'proxy.sip_port': must be 1..65535"


def test_overrides_merge_into_the_file_and_none_keeps_the_file(tmp_path):
    path = write(tmp_path, "[proxy]\nworkers = 2\nsip_port = 5070\n")
    config = load(path, {"proxy": {"sip_port": 5080, "workers": None}, "kafka": {"embedded_port": 19092}})
    assert (config.proxy.sip_port, config.proxy.workers, config.kafka.embedded_port) == (5080, 2, 19092)
    with pytest.raises(ConfigError) as err:
        load(path, {"proxy": {"sip_prot": 5080}})
    assert str(err.value) == f"{path}: key 'proxy.sip_prot': unknown key"


# --- sections (moved here from the programs' own test files) ---------------------------------

def test_cdr_settings_defaults_and_errors(tmp_path):
    assert load(None).cdr.silence_seconds == 4 * 3600
    path = tmp_path / "sipledger.toml"
    path.write_text('[proxy]\nsip_port = 5070\n[cdr]\nsilence_seconds = 30\nrecords_topic = "x"\n')
    config = load(path)                                  # other programs' sections are theirs
    assert (config.cdr.silence_ms, config.cdr.records_topic) == (30_000, "x")
    path.write_text("[cdr]\nsilence_secs = 30\n")
    with pytest.raises(ConfigError, match="silence_secs"):
        load(path)
    path.write_text("[cdr]\nbatch_size = 0\n")
    with pytest.raises(ConfigError, match="cdr.batch_size"):
        load(path)


def test_radius_settings_load_servers_in_order(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[radius]\ninterim_interval_s = 300\nsend_failed = true\nmultileg = "opensips"\n'
                   'transport = "tcp"\n'
                   '[[radius.servers]]\nhost = "10.0.0.1"\nsecret = "a"\n'
                   '[[radius.servers]]\nhost = "10.0.0.2"\nport = 1646\nsecret = "b"\n')
    radius = load(cfg).radius
    assert [(s.host, s.port, s.secret) for s in radius.servers] == [("10.0.0.1", 1813, "a"),
                                                                    ("10.0.0.2", 1646, "b")]
    assert (radius.interim_interval_s, radius.send_failed, radius.multileg, radius.transport) == \
        (300, True, "opensips", "tcp")
    assert radius.enabled and not load(None).radius.enabled and load(None).radius.transport == "udp"


@pytest.mark.parametrize("text, key", [
    ("[radius]\nbogus = 1\n", "radius.bogus"),
    ("[radius]\nmultileg = \"both\"\n", "radius.multileg"),
    ("[radius]\ntransport = \"sctp\"\n", "radius.transport"),
    ("[radius]\nmax_in_flight = 300\n", "radius.max_in_flight"),
    ("[radius]\nnas_ip = \"nas.example\"\n", "radius.nas_ip"),
    ("[[radius.servers]]\nhost = \"h\"\nsecret = \"\"\n", "radius.servers[0].secret"),
    ("[[radius.servers]]\nhost = \"h\"\n", "radius.servers[0]"),
])
def test_radius_settings_errors_name_the_key(tmp_path, text, key):
    cfg = tmp_path / "s.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert key_of(str(err.value)) == key, err.value


# --- environment overrides: SIPLEDGER__SECTION__KEY (compose/README.md) -------------------------

def _toml_value(value) -> str:
    """A TOML value for a default (json spells scalars and arrays the TOML way)."""
    import json
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


@pytest.mark.parametrize("section,key", KEYS)
def test_every_key_can_be_set_from_the_environment(section, key):
    default = msgspec.to_builtins(getattr(getattr(Config(), section), key))
    text = default if isinstance(default, str) else _toml_value(default)
    assert load(None, environ={f"SIPLEDGER__{section.upper()}__{key.upper()}": text}) == Config()


def test_environment_sits_between_the_file_and_the_command_line(tmp_path, monkeypatch):
    path = write(tmp_path, "[proxy]\nsip_port = 5070\nworkers = 2\n")
    env = {"SIPLEDGER__PROXY__SIP_PORT": "5080", "SIPLEDGER__KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092"}
    config = load(path, environ=env)
    assert (config.proxy.sip_port, config.proxy.workers, config.kafka.bootstrap_servers) == (5080, 2, "k1:9092,k2:9092")
    assert load(path, {"proxy": {"sip_port": 5090}}, environ=env).proxy.sip_port == 5090
    assert load(path, {"proxy": {"sip_port": None}}, environ=env).proxy.sip_port == 5080
    monkeypatch.setenv("SIPLEDGER__PROXY__SIP_PORT", "5081")       # the process environment by default
    assert load(path).proxy.sip_port == 5081


def test_environment_values_take_the_type_of_their_key():
    config = load(None, environ={
        "SIPLEDGER__NODE__NAME": "0042",                              # a string stays a string
        "SIPLEDGER__KAFKA__SASL_PASSWORD": "p=w#d \"x\"",
        "SIPLEDGER__KAFKA__CLIENT_PROFILE": "kafka",                  # a choice of strings too
        "SIPLEDGER__PROXY__TCP": "false",
        "SIPLEDGER__PROXY__T1": "1",                                  # an integer for a float
        "SIPLEDGER__PROXY__DOMAINS": '["a.example", "b.example"]',
        "SIPLEDGER__RADIUS__SERVERS": '[{host = "10.0.0.5", secret = "s"}]',
        "SIPLEDGER_DATA_DIR": "/elsewhere",                           # one underscore: not an override
    })
    assert config.node.name == "0042" and config.kafka.sasl_password == 'p=w#d "x"'
    assert config.kafka.client_profile == "kafka" and config.proxy.tcp is False and config.proxy.t1 == 1.0
    assert config.proxy.domains == ("a.example", "b.example")
    assert [(s.host, s.port, s.secret) for s in config.radius.servers] == [("10.0.0.5", 1813, "s")]


@pytest.mark.parametrize("name,value,expected", [
    ("SIPLEDGER__PROXY__SIP_PORTT", "5060", "environment SIPLEDGER__PROXY__SIP_PORTT: unknown key 'proxy.sip_portt'"),
    ("SIPLEDGER__PROXYY__SIP_PORT", "5060", "environment SIPLEDGER__PROXYY__SIP_PORT: unknown section 'proxyy'"),
    ("SIPLEDGER__PROXY", "1", "environment SIPLEDGER__PROXY: must be SIPLEDGER__SECTION__KEY"),
    ("SIPLEDGER__PROXY__SIP__PORT", "1", "environment SIPLEDGER__PROXY__SIP__PORT: must be SIPLEDGER__SECTION__KEY"),
    ("SIPLEDGER__PROXY__SIP_PORT", "fifty", "environment SIPLEDGER__PROXY__SIP_PORT: key 'proxy.sip_port': "
                                            "'fifty' is not a TOML value"),
    ("SIPLEDGER__PROXY__SIP_PORT", '"5060"', "environment SIPLEDGER__PROXY__SIP_PORT: key 'proxy.sip_port': "
                                             "Expected `int`, got `str`"),
    ("SIPLEDGER__PROXY__SIP_PORT", "70000", "environment SIPLEDGER__PROXY__SIP_PORT: key 'proxy.sip_port': "
                                            "must be 1..65535"),
    ("SIPLEDGER__KAFKA__CLIENT_PROFILE", "tansuu", "environment SIPLEDGER__KAFKA__CLIENT_PROFILE: "
                                                   "key 'kafka.client_profile': Invalid enum value 'tansuu'"),
    ("SIPLEDGER__RADIUS__SERVERS", '[{host = "10.0.0.5"}]', "environment SIPLEDGER__RADIUS__SERVERS: "
                                                            "key 'radius.servers[0]': Object missing required field `secret`"),
])
def test_a_bad_variable_is_one_line_naming_it(name, value, expected):
    with pytest.raises(ConfigError) as err:
        load(None, environ={name: value})
    assert str(err.value) == expected


@pytest.mark.parametrize("text,ok", [
    ("worker_port_base = 0\nworkers = 4", True),
    ("worker_port_base = 5070\nworkers = 2\nsip_port = 5060", True),
    ("worker_port_base = 5059\nworkers = 2\nsip_port = 5060", False),     # 5060 would be worker 1's
    ("worker_port_base = 5060\nworkers = 1\nsip_port = 5060", False),
    ("worker_port_base = 80\nworkers = 2", False),
    ("worker_port_base = 65535\nworkers = 2", False),
])
def test_worker_port_base(tmp_path, text, ok):
    path = write(tmp_path, f"[proxy]\n{text}\n")
    if ok:
        load(path)
    else:
        with pytest.raises(ConfigError, match="key 'proxy.worker_port_base'"):
            load(path)
