"""sipsak against `sipledger up` with its default configuration: OPTIONS, a
digest REGISTER, a MESSAGE to a registered baresip phone, and MESSAGEs from an
outsider to the PSTN or a foreign domain refused."""
from __future__ import annotations

import pytest

from tests.harness.calls import DOMAIN, PASSWORDS
from tests.harness.poll import eventually
from tests.harness.sipsak import request_text, send

pytestmark = [pytest.mark.interop]


def test_options_to_the_proxy_is_answered_200(sl, tmp_path):
    host, port = sl.sip_addr
    res = send(request_text("OPTIONS", f"sip:{host}:{port}", "sip:sipsak@127.0.0.1",
                            f"sip:{host}:{port}"), sl.sip_addr, tmp_path)
    assert res.status == 200, res.describe()


def test_register_with_digest_then_unregister(sl, tmp_path):
    def register(expires: int):
        return send(request_text("REGISTER", f"sip:{DOMAIN}", f"sip:carol@{DOMAIN}",
                                 f"sip:carol@{DOMAIN}",
                                 headers={"Contact": "<sip:carol@127.0.0.1:5999>",
                                          "Expires": str(expires)}),
                    sl.sip_addr, tmp_path, user="carol", password=PASSWORDS["carol"])

    res = register(120)
    assert res.challenged and res.status == 200, res.describe()
    assert "sip:carol@127.0.0.1:5999" in res.output.split("SIP/2.0 200", 1)[1], res.describe()
    res = register(0)
    assert res.status == 200, res.describe()


def test_register_with_a_wrong_password_is_refused(sl, tmp_path):
    res = send(request_text("REGISTER", f"sip:{DOMAIN}", f"sip:carol@{DOMAIN}", f"sip:carol@{DOMAIN}",
                            headers={"Contact": "<sip:carol@127.0.0.1:5998>", "Expires": "60"}),
               sl.sip_addr, tmp_path, user="carol", password="not-" + PASSWORDS["carol"])
    assert res.status in (401, 403), res.describe()


def test_message_is_delivered_to_a_registered_baresip_phone(sl, phones, tmp_path):
    bob = phones("bob")
    bob.wait_registered()
    body = "hello bob, from sipsak via sipledger"
    res = send(request_text("MESSAGE", f"sip:bob@{DOMAIN}", f"sip:alice@{DOMAIN}",
                            f"sip:bob@{DOMAIN}", body=body),
               sl.sip_addr, tmp_path, user="alice", password=PASSWORDS["alice"])
    assert res.status == 200, res.describe()
    assert res.challenged, "the MESSAGE was not challenged\n" + res.describe()
    eventually(lambda: body in bob.log_text(), "bob's baresip to receive the MESSAGE", 5)


@pytest.mark.parametrize("to", ["sip:004930123456@" + DOMAIN, "sip:someone@foreign.test"],
                         ids=["pstn", "foreign-domain"])
def test_unauthenticated_message_from_an_outsider_to_a_gateway_or_foreign_domain_is_refused(
        sl, uas_factory, tmp_path, to):
    gateway = uas_factory("uas_answer", timeout=20)
    name = f"sipsak-gw-{gateway.port}"
    sl.run_cli("gateway", "add", name, "--address", f"127.0.0.1:{gateway.port}")
    sl.run_cli("route", "add", "--prefix", "0049", "--gateways", name)
    sl.wait_until_loaded()
    res = send(request_text("MESSAGE", to, "sip:mallory@evil.test", to, body="free calls?"),
               sl.sip_addr, tmp_path, timeout=8)
    reached = gateway.received()
    assert res.status in (403, 407), res.describe() + f"\nthe gateway received: {reached}"
    assert reached == [], "the outsider's MESSAGE reached the gateway"
