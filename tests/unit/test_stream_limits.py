"""The stream framer's limits (proxy/sip/stream.py) and the stateless refusals (proxy/sip/reject.py)."""
from __future__ import annotations

import pytest

from proxy.infra.config import ConfigError, load
from proxy.sip.reject import refusal
from proxy.sip.stream import FramingError, StreamFramer

HEAD = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n")


def test_the_size_cap_is_configurable_and_answerable():
    framer = StreamFramer(max_message=2048)
    with pytest.raises(FramingError) as err:
        framer.feed(HEAD + b"Content-Length: 4000\r\n\r\n")
    assert err.value.status == 513 and err.value.head is not None
    answer = refusal(err.value.head, err.value.status)
    assert answer is not None and answer.startswith(b"SIP/2.0 513 Message Too Large")


def test_an_endless_header_is_refused_without_an_answer():
    framer = StreamFramer(max_message=2048)
    with pytest.raises(FramingError) as err:
        framer.feed(HEAD + b"X: " + b"a" * 3000)
    assert err.value.status == 513 and err.value.head is None


def test_started_and_head_tell_a_stalled_message():
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [] and not framer.started          # keep-alives only
    framer.feed(HEAD[:20])
    assert framer.started and framer.head() is None                       # slowloris
    framer.feed(HEAD[20:] + b"Content-Length: 10\r\n\r\nabc")
    head = framer.head()
    assert framer.started and head is not None and head.endswith(b"\r\n\r\n")   # body missing
    answer = refusal(head, 400, "Incomplete message")
    assert answer is not None and answer.startswith(b"SIP/2.0 400 Incomplete message")
    assert len(framer.feed(b"defghij")) == 1 and not framer.started


def test_nothing_to_answer_gives_none():
    assert refusal(b"SIP/2.0 200 OK\r\n\r\n", 503) is None
    assert refusal(b"ACK sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", 503) is None
    assert refusal(b"\xff\xfe garbage", 400) is None


@pytest.mark.parametrize("text", [
    "[tcp]\nidle_timeout_seconds = 0\n",
    "[tcp]\nmax_connections = 10\nmax_connections_per_ip = 11\n",
    "[proxy]\nmax_message_bytes = 10\n",
    "[pike]\ndensity = 0\n",
    "[pike]\npolicy = \"reject\"\n",
    "[overload]\nmax_delay_ms = 10\nresume_delay_ms = 20\n",
])
def test_bad_flood_settings_are_refused(tmp_path, text):
    path = tmp_path / "sipledger.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load(path)
