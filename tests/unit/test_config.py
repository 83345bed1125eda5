"""One TOML file, every key defaulted, and bad files explained in one line naming the key."""
from __future__ import annotations

import pytest

from proxy.infra.config import Config, ConfigError, load


def write(tmp_path, text):
    path = tmp_path / "sipledger.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load(None)
    assert config == Config()
    assert config.proxy.max_dialog_seconds == 10800 and config.topics.sip_events == "sip.events"


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
