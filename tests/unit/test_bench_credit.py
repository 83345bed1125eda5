"""The product-path benchmark (bench/sip_rate.sh's "credit" run): what it
provisions lets every SIPp subscriber authenticate and be rated, and the
in-memory twin (bench/proxy_cpu.py --auth) really challenges, verifies and
authorizes each call before relaying it."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from bench import proxy_cpu, sip_credit_setup
from billing.client import BillingClient
from billing.rating.store import RatesStore
from proxy.core.digest import DigestAuthenticator, compute_ha1, compute_response
from proxy.infra.config import BillingSettings
from proxy.provisioning.live import LiveProvisioning
from proxy.provisioning.store import ProvisioningStore, default_url

CSV_LINE = re.compile(r"^(u\d{5});\[authentication username=\1 password=(\S+)\];(\S+)$")


def test_setup_provisions_subscribers_that_authenticate_and_accounts_that_can_pay(tmp_path, monkeypatch):
    data, config, users = tmp_path / "data", tmp_path / "cfg.toml", tmp_path / "users.csv"
    config.write_text("[cdr]\nenabled = false\n")
    monkeypatch.setattr(sys, "argv", ["sip_credit_setup.py", str(data), str(config), str(users),
                                      "--users", "3", "--domain", "bench.test", "--prefix", "49",
                                      "--topup", "25"])
    assert sip_credit_setup.main() == 0

    lines = users.read_text().splitlines()
    assert lines[0] == "SEQUENTIAL" and len(lines) == 4     # SIPp -inf: one subscriber a call
    parsed = [CSV_LINE.match(line) for line in lines[1:]]
    assert all(parsed), lines
    assert len({m[1] for m in parsed}) == 3

    # each CSV line's password answers the proxy's challenge for that subscriber
    live = LiveProvisioning(ProvisioningStore(default_url(data)), poll_interval=0)
    live.maybe_reload(float("inf"))
    auth = DigestAuthenticator(b"test-secret")
    now = time.time()
    uri = "sip:4930123456@bench.test"
    for m in parsed:
        user, password, domain = m[1], m[2], m[3]
        nonce = re.search(r'nonce="([^"]+)"', auth.challenge(domain, now)[0])[1]
        response = compute_response("MD5", compute_ha1("MD5", user, domain, password), nonce, "INVITE", uri,
                                    "auth", "00000001", "c0ffee")
        header = (f'Digest username="{user}",realm="{domain}",nonce="{nonce}",uri="{uri}",qop=auth,'
                  f'nc=00000001,cnonce="c0ffee",response="{response}",algorithm=MD5')
        assert auth.verify("INVITE", header, domain, live.snapshot.credentials, now, request_uri=uri).ok

    # and has a prepaid account with the top-up, rated by the plan for the dialled prefix
    settings = BillingSettings()
    client = BillingClient(data, settings)
    rates = RatesStore(settings.database_url(data))
    try:
        assignments = rates.assignments()
        plan = rates.get_plans()["bench"]
    finally:
        rates.close()
    assert [r.prefix for r in plan.rates] == ["49"]
    for m in parsed:
        account = f"{m[1]}@{m[3]}"
        view = client.balance(account)
        assert (view["kind"], view["status"], view["balance"]) == ("prepaid", "active", "25")
        assert assignments[account] == "bench"


def test_auth_bench_challenges_verifies_and_authorizes_every_call(tmp_path):
    calls = 5
    engine, effects = proxy_cpu.build(Path(tmp_path), auth=True)
    uas_invites = []

    def feed(data, source):
        engine.on_data(data, source)
        effects.answer()
        out, effects.sent = effects.sent, []
        uas_invites.extend(d for d, t in out if d.startswith(b"INVITE") and t.port == proxy_cpu.UAS.port)
        return out

    for n in range(calls):
        proxy_cpu.call(feed, n, auth=True)           # StopIteration if a message never came
    stats = engine.core.stats
    assert (stats.auth_challenges, stats.auth_successes, stats.auth_failures) == (calls, calls, 0)
    assert effects.authorizations == calls
    # the relayed INVITE is the authenticated one, its credentials for our realm removed
    assert len(uas_invites) == calls
    assert all(b"\r\nCSeq: 2 INVITE" in d and b"Proxy-Authorization" not in d for d in uas_invites)


def test_plain_bench_calls_are_neither_challenged_nor_authorized(tmp_path):
    engine, effects = proxy_cpu.build(Path(tmp_path))

    def feed(data, source):
        engine.on_data(data, source)
        effects.answer()
        out, effects.sent = effects.sent, []
        return out

    proxy_cpu.call(feed, 1)
    assert engine.core.stats.auth_challenges == 0 and effects.authorizations == 0
