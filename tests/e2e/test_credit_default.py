"""Credit control is on whenever billing runs: with the default config (no
[authorization] section, billing on) `up` says ``credit=on`` and a prepaid
account with balance 0 calling a rated destination gets 402 before any phone
rings."""
from __future__ import annotations

import pytest

from tests.harness.calls import DOMAIN, refused_call
from tests.harness.proxy import event_types, read_events

pytestmark = pytest.mark.e2e

DAVE = f"dave@{DOMAIN}"      # only this module gives dave a (prepaid, empty) account
RATES = "plan,prefix,name,price_per_min,first_increment,next_increment,rounding,decimals,currency\n" \
        "retail,*,anywhere,0.60,1,1,up,4,EUR\n"


@pytest.fixture(scope="module")
def sl(default_up, tmp_path_factory):
    """The shared default `up` (tests/e2e/conftest.py), dave prepaid with balance 0."""
    rates = tmp_path_factory.mktemp("credit-default") / "rates.csv"
    rates.write_text(RATES)
    default_up.run_cli("rates", "import", str(rates))
    default_up.run_cli("rates", "assign", DAVE, "retail")
    default_up.run_cli("account", "add", DAVE, "--prepaid", "--currency", "EUR")     # balance 0
    return default_up


def test_default_config_runs_credit_control(sl):
    assert "[authorization]" not in sl.config_path.read_text()
    assert " credit=on " in sl.ready_line


def test_zero_balance_gets_402_and_the_callee_never_rings(sl, uas_factory, sipp_dir):
    bob = uas_factory("uas_answer", timeout=15)
    res = refused_call(sl, "dave", bob, sipp_dir, 402)
    call_id = res.sent("INVITE")[0].header("Call-ID")
    events = read_events(sl.kafka_bootstrap, "sip.events", call_id=call_id, timeout=15,
                         until=lambda evs: "call.failed" in event_types(evs))
    (failed,) = [e for e in events if e["type"] == "call.failed"]
    assert failed["code"] == 402 and failed["by_proxy"], failed
    assert "invite.routed" not in event_types(events), event_types(events)     # never forwarded
    assert bob.result().received("INVITE") == [], "the callee must not ring"
