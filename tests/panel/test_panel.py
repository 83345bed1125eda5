"""The web panel (api/panel/, docs/panel.md) in a real headless Chromium against
one `sipledger up`: log in, see a SIPp call in the CDR viewer, top up an
account, hang up a live SIPp call, and an account login kept to its own pages.

The panel only calls the REST API, so these tests check the pages and the
flows a person follows; the rules themselves are tested in tests/api."""
from __future__ import annotations

import threading

import pytest

from tests.harness.calls import DOMAIN, PASSWORDS, assert_completed, assert_uas_completed, registered
from tests.harness.poll import eventually
from tests.harness.sipp import run_uac

pytestmark = pytest.mark.e2e

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"


def call(sl, sipp_dir, scenario: str = "uac_call", **kw):
    return run_uac(scenario, sl.sip_addr, {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 20,
                   auth=("alice", PASSWORDS["alice"]), auth_uri=BOB, workdir=sipp_dir, **kw)


def _quietly(check):
    try:
        return check()
    except AssertionError:
        return None


def test_admin_logs_in_with_a_token(panel, up, shot):
    panel.logout()
    panel.type("#token", "slt_not-a-real-token")
    panel.click("#login-token-submit")
    assert "invalid or revoked token" in panel.text("#login-result .error")
    panel.login_token(up.admin_token)
    assert panel.text("#whoami") == "admin"
    nav = {a.get_attribute("data-nav") for a in panel.all("#nav a")}
    assert {"cdrs", "live", "accounts", "rates", "quality", "metrics", "fraud", "p"} <= nav
    panel.wait_text("h1", "Metrics")           # an admin lands on the node's metrics
    panel.wait_text("td", lambda t: t.startswith("core:"))
    shot()
    panel.open("/fraud")
    panel.wait_text("main p.empty", "No fraud alerts.")


def test_admin_adds_a_domain_and_a_user_who_can_then_log_in(panel, up, shot):
    panel.login_token(up.admin_token)
    panel.open("/p/domains")
    panel.type("#f-domain", "panel.test")
    panel.click("#domains-add")
    panel.wait_text("tbody tr", "panel.test")
    panel.open("/p/users")
    panel.type("#f-address", "dave@panel.test")
    panel.type("#f-password", "d4ve-pw")
    panel.click("#users-add")
    panel.wait_text("tbody tr", "dave@panel.test")
    shot()
    assert up.client.get("/v1/users/dave@panel.test").json()["storage"] == "plaintext"
    panel.login_user("dave@panel.test", "d4ve-pw")        # the registrar's credentials, now live
    assert panel.text("#whoami") == "dave@panel.test"
    panel.login_token(up.admin_token)
    panel.open("/p/users")
    panel.type("#user-passwd input[name=address]", "dave@panel.test")
    panel.type("#user-passwd input[name=password]", "n3w-pw")
    panel.click("#user-passwd button")
    panel.wait_text("#user-passwd + .action-result", "Password of dave@panel.test changed")
    panel.login_user("dave@panel.test", "d4ve-pw")
    assert "wrong user or password" in panel.text("#login-result .error")
    panel.login_user("dave@panel.test", "n3w-pw")
    assert panel.text("#whoami") == "dave@panel.test"


def test_a_sipp_call_appears_in_the_cdr_viewer(panel, up, uas_factory, sipp_dir, shot):
    bob = uas_factory("uas_answer", timeout=30)
    with registered(up, "bob", bob, sipp_dir):
        res = call(up, sipp_dir, hold_ms=300)
        assert_completed(res, "answered call")
    call_id = res.sent("INVITE")[0].header("Call-ID")
    panel.login_token(up.admin_token)
    panel.open("/cdrs")
    row = f'tr[data-call-id="{call_id}"]'

    def listed():
        if not panel.all(row):
            panel.click("#cdr-refresh")        # the CDR reaches the store a moment after the BYE
        return panel.all(row)
    eventually(listed, f"the call {call_id} in the CDR viewer", 20, interval=0.5)
    assert "answered" in panel.text(row) and ALICE in panel.text(row)
    assert "1 answered" in panel.wait_text("#cdr-range-totals", "All pages: 1 attempts")
    panel.click(f"{row} a.cdr-link")
    panel.wait_text("h1", call_id)
    assert "200 OK" in panel.wait_text("section.card", "Legs")

    def ladder():         # the captured messages reach their table a moment after the CDR
        if not panel.all("pre.ladder"):
            panel.driver.refresh()
            panel.wait_text("h1", call_id)
        return panel.all("pre.ladder")
    eventually(ladder, "the call's SIP ladder", 20, interval=0.5)
    assert all(m in panel.text("pre.ladder") for m in ("INVITE", "200", "ACK", "BYE"))
    shot()
    panel.open("/quality")                   # the call is a point on the quality charts
    panel.find("svg.chart circle")
    assert panel.wait_text("tbody tr", lambda t: t.split()[-1].endswith("ms"))


def test_top_up_changes_the_balance(panel, up, shot):
    # carol: an account without a rate plan is refused calls, and alice still calls below
    assert up.client.post("/v1/accounts", json={"id": CAROL, "currency": "EUR"}).status_code == 201
    panel.login_token(up.admin_token)
    panel.open(f"/accounts/{CAROL}")
    panel.wait_text("#balance", "0 EUR")
    panel.type("#topup-amount", "12.50")
    panel.click("#topup-submit")
    panel.wait_text("#balance", "12.5")
    assert up.client.get(f"/v1/accounts/{CAROL}/balance").json()["balance"] in ("12.50", "12.5", "12.500000")

    def in_ledger():      # the ledger's history is its ClickHouse copy, a moment behind
        panel.click("#ledger-refresh")
        return panel.wait_text("#ledger td", "topup", timeout=1)
    eventually(lambda: _quietly(in_ledger), "the top-up in the ledger history", 20, interval=0.2)
    shot()
    panel.click("#block")
    panel.wait_text("#account-status", "blocked")
    assert up.client.get(f"/v1/accounts/{CAROL}").json()["status"] == "blocked"
    panel.click("#unblock")
    panel.wait_text("#account-status", "active")


def test_a_rates_file_with_bad_lines_is_refused_line_by_line(panel, up, shot):
    panel.login_token(up.admin_token)
    panel.open("/rates")
    panel.type("#rates-csv", "plan,prefix,name,price_per_min,currency\nweb,49,DE,abc,EUR\nweb,33,FR,0.01,EUR\n"
                             "web,x1,,0.02,EUR\n")
    panel.click("#rates-import-submit")
    panel.find("#rates-result .line-errors")
    lines = [li.text for li in panel.all("#rates-result .line-errors li")]
    assert [line.split(":")[0] for line in lines] == ["line 2", "line 4"], lines
    shot()
    panel.type("#rates-csv", "plan,prefix,name,price_per_min,currency\nweb,49,DE,0.01,EUR\n")
    panel.click("#rates-import-submit")
    panel.wait_text("#rates-result", "Imported 1 rates; new plans: web")


def test_hang_up_a_live_call(panel, up, uas_factory, sipp_dir, shot):
    bob = uas_factory("uas_bye_from_proxy", timeout=30)
    box: dict = {}
    with registered(up, "bob", bob, sipp_dir):
        thread = threading.Thread(target=lambda: box.setdefault("res", call(up, sipp_dir, "uac_wait_bye")),
                                  daemon=True)
        thread.start()
        (invite,) = bob.wait_for("INVITE", 10)
        call_id = invite.header("Call-ID")
        panel.login_token(up.admin_token)
        panel.open("/live")
        row = f'tr[data-call-id="{call_id}"]'
        panel.wait_text(row, "confirmed")
        panel.click(f"{row} button.hangup")
        panel.wait_text(f"{row} button.hangup", "Confirm")
        shot()                                   # the call listed, its button asking to confirm
        panel.click(f"{row} button.hangup")
        panel.wait_text("#live-status", "Hang-up sent")
        thread.join(25)
        assert_completed(box["res"], "alice is hung up from the panel")
        uas_res = assert_uas_completed(bob, "bob is hung up from the panel")
    for bye in (box["res"].received("BYE")[0], uas_res.received("BYE")[0]):
        assert "hung up by the operator" in (bye.header("Reason") or ""), bye
    panel.gone(row)


def test_an_account_login_sees_only_its_own_pages(panel, up, shot):
    panel.login_user(ALICE, "wrong-password")
    assert "wrong user or password" in panel.text("#login-result .error")
    panel.login_user(ALICE, PASSWORDS["alice"])
    assert panel.text("#whoami") == ALICE
    panel.wait_text("h1", "Calls")              # an account lands on its own calls
    nav = {a.get_attribute("data-nav") for a in panel.all("#nav a")}
    assert "rates" not in nav and "p" not in nav and "metrics" not in nav
    panel.open("/cdrs")
    panel.find("tbody tr")
    assert all(ALICE in r.text for r in panel.all("tbody tr"))
    panel.open(f"/accounts/{BOB}")
    assert panel.text(".error.denied") == f"Access denied: this token may only read account {ALICE}"
    shot()
    panel.open("/rates")
    assert "Access denied" in panel.text(".error.denied")
    panel.open("/live")
    panel.find("#live-list p")
    assert not panel.all("button.hangup")
    # a phone: nothing wider than the screen, the navigation and the calls still there
    panel.driver.set_window_size(390, 844)
    try:
        panel.open("/cdrs")
        panel.find("tbody tr")
        assert panel.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        assert panel.find('#nav a[data-nav="cdrs"]').is_displayed()
        shot("-phone")
    finally:
        panel.driver.set_window_size(1280, 1300)
