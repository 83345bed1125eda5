"""The real proxy process with the default configuration (no [auth] section):
one MD5 challenge, and a stranger's call to a PSTN number never reaches the
gateway (issue 13).  The gateway is a UDP socket that must receive nothing."""
from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.harness.proxy import proxy_run
from tests.harness.sipp import free_udp_port


def cli(data_dir, *args):
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])
    assert result.exit_code == 0, result.output


@pytest.fixture
def proxy(tmp_path, broker):
    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gateway.bind(("127.0.0.1", 0))
    data = tmp_path / "data"
    cli(data, "domain", "add", "example.test")
    cli(data, "user", "add", "alice@example.test", "--password", "a-secret")
    cli(data, "gateway", "add", "gw1", "--address", f"127.0.0.1:{gateway.getsockname()[1]}")
    cli(data, "route", "add", "--prefix", "0", "--gateways", "gw1")
    config = tmp_path / "sipledger.toml"
    config.write_text("[authorization]\nenabled = false\n")      # no billing here; [auth] as shipped
    port = free_udp_port()
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(10)
    try:
        with proxy_run(data, config, port, broker.bootstrap):
            yield port, phone, gateway
    finally:
        phone.close()
        gateway.close()


def final_answer(phone, request: str, port: int) -> str:
    phone.sendto(request.replace("\n", "\r\n").encode(), ("127.0.0.1", port))
    while True:
        text = phone.recv(65535).decode("latin-1")
        if not text.startswith("SIP/2.0 1"):
            return text


def test_one_md5_challenge_and_no_toll_fraud_by_default(proxy):
    port, phone, gateway = proxy
    me = phone.getsockname()[1]
    answer = final_answer(phone, f"""REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKreg1;rport
From: <sip:alice@example.test>;tag=r1
To: <sip:alice@example.test>
Call-ID: reg-1
CSeq: 1 REGISTER
Contact: <sip:alice@127.0.0.1:{me}>
Max-Forwards: 70
Content-Length: 0

""", port)
    challenges = [h for h in answer.split("\r\n") if h.lower().startswith("www-authenticate:")]
    assert answer.startswith("SIP/2.0 401") and len(challenges) == 1 and "algorithm=MD5" in challenges[0]

    answer = final_answer(phone, f"""INVITE sip:004930123456@example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKfraud1;rport
From: <sip:mallory@evil.test>;tag=m1
To: <sip:004930123456@example.test>
Call-ID: fraud-1
CSeq: 1 INVITE
Contact: <sip:mallory@127.0.0.1:{me}>
Max-Forwards: 70
Content-Length: 0

""", port)
    assert answer.startswith("SIP/2.0 403")
    gateway.setblocking(False)
    with pytest.raises(BlockingIOError):          # the call was refused before any relay
        gateway.recv(65535)
