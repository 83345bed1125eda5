"""The routing commands (gateway, carrier, route, dialplan, blacklist, trusted,
group, forward), mounted on a stub of the main CLI."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from proxy.infra import clock
from proxy.provisioning.store import default_url
from proxy.routing.cli import (
    blacklist_app,
    carrier_app,
    dialplan_app,
    forward_app,
    gateway_app,
    group_app,
    route_app,
    trusted_app,
)
from proxy.routing.store import RoutingStore

D = "example.test"


@pytest.fixture
def url(tmp_path):
    return default_url(tmp_path / "data")


@pytest.fixture
def run(url):
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context):
        # what the real main callback does after resolving --data-dir / --config
        ctx.obj = SimpleNamespace(provisioning_url=url)

    for name, sub in [("gateway", gateway_app), ("carrier", carrier_app), ("route", route_app),
                      ("dialplan", dialplan_app), ("blacklist", blacklist_app), ("trusted", trusted_app),
                      ("group", group_app), ("forward", forward_app)]:
        app.add_typer(sub, name=name)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def failed(result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    return result.stderr


def snapshot(url):
    store = RoutingStore(url)
    try:
        return store.snapshot()
    finally:
        store.close()


# -- gateways, carriers, routes --------------------------------------------------------------------

def test_gateway_add_list_del(run, url):
    assert ok(run("gateway", "add", "gw1", "--address", "192.0.2.10:5060", "--strip", "1",
                  "--prefix", "0049", "--probe", "always", "--attrs", "carrier=a")) == \
        "added gateway gw1 at sip:192.0.2.10:5060\n"
    assert ok(run("gateway", "add", "gw2", "--address", "gw2.example.net", "--transport", "TCP")) == \
        "added gateway gw2 at sip:gw2.example.net;transport=tcp\n"
    listing = ok(run("gateway", "list"))
    assert "192.0.2.10:5060" in listing and "always" in listing and "carrier=a" in listing
    gw1 = snapshot(url).gateways["gw1"]
    assert (gw1.strip, gw1.prefix, gw1.probe.value) == (1, "0049", "always")
    assert ok(run("gateway", "del", "gw2")) == "deleted gateway gw2\n"
    assert list(snapshot(url).gateways) == ["gw1"]


@pytest.mark.parametrize("args, message", [
    (["--address", "192.0.2.1:99999"], "invalid port"),
    (["--address", "192.0.2.1", "--transport", "sctp"], "transport must be one of udp, tcp"),
    (["--address", "192.0.2.1", "--probe", "maybe"], "invalid probe mode"),
    (["--address", "192.0.2.1", "--strip", "-1"], "strip must be"),
    (["--address", "192.0.2.1", "--prefix", "0 0"], "invalid prefix"),
])
def test_gateway_add_refusals_are_one_line(run, args, message):
    assert message in failed(run("gateway", "add", "gw1", *args))


def test_duplicate_gateway_and_unknown_deletes(run):
    ok(run("gateway", "add", "gw1", "--address", "192.0.2.1"))
    assert failed(run("gateway", "add", "gw1", "--address", "192.0.2.2")) == "error: gateway gw1 already exists\n"
    assert failed(run("gateway", "del", "nope")) == "error: gateway nope does not exist\n"
    assert "route #9 does not exist" in failed(run("route", "del", "9"))


def test_routes_with_carriers_weights_and_time_windows(run, url):
    for name, addr in [("gw1", "192.0.2.1"), ("gw2", "192.0.2.2"), ("gw3", "192.0.2.3")]:
        ok(run("gateway", "add", name, "--address", addr))
    assert ok(run("carrier", "add", "c1", "--gateways", "gw2,gw3", "--weights", "50,50")) == \
        "added carrier c1: gw2=50,gw3=50\n"
    assert ok(run("route", "add", "--prefix", "49", "--gateways", "gw1,gw2", "--weights", "70,30")) == \
        "added route #1: prefix '49' -> gw1=70,gw2=30 (group default, priority 0)\n"
    out = ok(run("route", "add", "--prefix", "4930", "--gateways", "gw1,#c1", "--group", "vip,default",
                 "--priority", "5", "--time", "08:00-18:00", "--weekdays", "1-5", "--tz", "Europe/Berlin"))
    assert out.startswith("added route #2: prefix '4930' -> gw1,#c1 (group default,vip, priority 5, "
                          "08:00-18:00 days 1-5 Europe/Berlin)")
    listing = ok(run("route", "list"))
    assert "gw1=70,gw2=30" in listing and "#c1" in listing
    rules = {r.id: r for r in snapshot(url).drouting.rules}
    assert rules[2].groups == {"vip", "default"} and rules[2].window.weekdays == {1, 2, 3, 4, 5}
    assert ok(run("route", "test", "4930123", "--at", "2025-01-06T10:00+01:00")).splitlines()[0] == \
        "1. gw1 sip:4930123@192.0.2.1 (route #2)"
    weekend = ok(run("route", "test", "4930123", "--at", "2025-01-05T10:00", "--call-id", "x"))
    assert "(route #1)" in weekend and len(weekend.splitlines()) == 2
    assert failed(run("route", "test", "33")) == "error: no route for 33 (group default)\n"
    assert "invalid time" in failed(run("route", "test", "49", "--at", "yesterday"))


@pytest.mark.clock
def test_route_test_without_at_routes_now_by_the_project_clock(run):
    ok(run("gateway", "add", "today", "--address", "192.0.2.1"))
    ok(run("gateway", "add", "other", "--address", "192.0.2.2"))
    today = clock.utcnow().isoweekday()
    ok(run("route", "add", "--prefix", "49", "--gateways", "other"))
    ok(run("route", "add", "--prefix", "49", "--gateways", "today", "--priority", "5", "--weekdays", str(today)))
    first = ok(run("route", "test", "4930123")).splitlines()[0]
    if clock.utcnow().isoweekday() != today:
        pytest.skip("the day changed during the test")
    assert first == "1. today sip:4930123@192.0.2.1 (route #2)"


@pytest.mark.parametrize("args, message", [
    (["--prefix", "49", "--gateways", "ghost"], "gateway ghost does not exist"),
    (["--prefix", "49", "--gateways", "#ghost"], "carrier ghost does not exist"),
    (["--prefix", "49", "--gateways", "gw1", "--weights", "1,2"], "2 weight(s) for 1 gateway(s)"),
    (["--prefix", "49", "--gateways", "gw1", "--time", "8-18"], "invalid time"),
    (["--prefix", "49", "--gateways", "gw1", "--weekdays", "8"], "invalid weekday"),
    (["--prefix", "49", "--gateways", "gw1", "--tz", "Nowhere/City"], "unknown time zone"),
    (["--prefix", "4 9", "--gateways", "gw1"], "invalid route: prefix"),
])
def test_route_add_refusals(run, args, message):
    ok(run("gateway", "add", "gw1", "--address", "192.0.2.1"))
    assert message in failed(run("route", "add", *args))


def test_in_use_gateways_and_carriers_cannot_be_deleted(run):
    ok(run("gateway", "add", "gw1", "--address", "192.0.2.1"))
    ok(run("carrier", "add", "c1", "--gateways", "gw1"))
    ok(run("route", "add", "--prefix", "1", "--gateways", "#c1"))
    assert "gateway gw1 is used by carrier c1" in failed(run("gateway", "del", "gw1"))
    assert "carrier c1 is used by route #1" in failed(run("carrier", "del", "c1"))
    assert "cannot contain a carrier" in failed(run("carrier", "add", "c2", "--gateways", "#c1"))
    ok(run("route", "del", "1"))
    assert ok(run("carrier", "del", "c1")) == "deleted carrier c1\n"
    assert "c1" not in ok(run("carrier", "list"))


# -- dialplan ------------------------------------------------------------------------------------------

def test_dialplan_add_test_list_del(run):
    assert ok(run("dialplan", "add", "0", "--match", r"^0(\d+)$", "--repl", r"+49\1")) == \
        "added dialplan 0 rule #1\n"
    ok(run("dialplan", "add", "0", "--match", "^00", "--subst", "^00", "--repl", "+", "--priority", "-1"))
    assert ok(run("dialplan", "test", "0", "0301234")) == \
        "+49301234  (rule #1 (priority 0): match ^0(\\d+)$ -> +49\\1)\n"
    assert ok(run("dialplan", "test", "0", "0044207")).startswith("+44207  (rule #2 (priority -1)")
    assert failed(run("dialplan", "test", "0", "+4930")) == "error: no rule of dialplan 0 matches '+4930'\n"
    assert failed(run("dialplan", "test", "7", "0301")) == "error: no rule of dialplan 7 matches '0301'\n"
    listing = ok(run("dialplan", "list", "0"))
    assert listing.index("#2") < listing.index("#1")                   # in the order they are tried
    assert ok(run("dialplan", "del", "1")) == "deleted dialplan 0 rule #1\n"
    assert failed(run("dialplan", "del", "1")) == "error: dialplan rule #1 does not exist\n"


def test_dialplan_bad_regex_is_refused_naming_the_rule(run):
    err = failed(run("dialplan", "add", "3", "--match", r"^0(\d+", "--repl", "x", "--priority", "2"))
    assert err.startswith("error: dialplan 3 rule (priority 2): bad match regex '^0(\\\\d+'")
    assert "invalid group reference 2" in failed(run("dialplan", "add", "3", "--match", "^(0)", "--repl", r"\2"))
    assert "bad substitution regex" in failed(run("dialplan", "add", "3", "--match", "^0", "--subst", "(",
                                                  "--repl", "x"))


# -- blacklist, trusted, group ---------------------------------------------------------------------------

def test_blacklist_commands(run, url):
    assert ok(run("blacklist", "add", "default", "0900")) == \
        "added prefix '0900' to blacklist default (473 Filtered Destination)\n"
    ok(run("blacklist", "add", "default", "110", "--exact", "--code", "403", "--reason", "Use 112"))
    assert ok(run("blacklist", "test", "default", "0900555")) == \
        "0900555 is blacklisted by '0900': 473 Filtered Destination\n"
    assert failed(run("blacklist", "test", "default", "1100")) == "error: 1100 is not in blacklist default\n"
    assert snapshot(url).blacklisted("default", "110").code == 403
    assert "status must be 400 to 699" in failed(run("blacklist", "add", "x", "1", "--code", "200"))
    assert "already in blacklist" in failed(run("blacklist", "add", "default", "0900"))
    assert "Use 112" in ok(run("blacklist", "list"))
    ok(run("blacklist", "del", "default", "0900"))
    assert "is not in blacklist" in failed(run("blacklist", "del", "default", "0900"))


def test_trusted_commands(run, url):
    assert ok(run("trusted", "add", "192.0.2.0/24", "--proto", "udp", "--tag", "carrier-1")) == \
        "trusted 192.0.2.0/24 (udp)\n"
    assert ok(run("trusted", "add", "2001:db8::1")) == "trusted 2001:db8::1/128 (any)\n"
    assert snapshot(url).is_trusted("192.0.2.9", "udp").tag == "carrier-1"
    assert "host bits set" in failed(run("trusted", "add", "192.0.2.1/24"))
    assert "invalid protocol" in failed(run("trusted", "add", "192.0.2.0/24", "--proto", "ws"))
    assert "carrier-1" in ok(run("trusted", "list"))
    assert ok(run("trusted", "del", "192.0.2.0/24", "--proto", "udp")) == "no longer trusted: 192.0.2.0/24 (udp)\n"
    assert "is not trusted" in failed(run("trusted", "del", "192.0.2.0/24"))


def test_group_commands(run, url):
    assert ok(run("group", "add", "alice@Example.TEST", "international")) == \
        "added alice@example.test to group international\n"
    assert ok(run("group", "require", "00", "pstn")) == "prefix '00' requires group pstn\n"
    assert ok(run("group", "require", "00", "international")) == \
        "prefix '00' requires group international (was pstn)\n"
    ok(run("group", "require", "0", "pstn"))
    snap = snapshot(url)
    assert snap.allowed("alice", D, "0044") == (True, "international")
    assert snap.allowed("alice", D, "030") == (False, "pstn")
    listing = ok(run("group", "list"))
    assert "alice@example.test" in listing and "pstn" in listing
    assert "expected user@domain" in failed(run("group", "add", "alice", "pstn"))
    assert "invalid group name" in failed(run("group", "add", "alice@example.test", "no way"))
    assert "already in group" in failed(run("group", "add", "alice@example.test", "international"))
    ok(run("group", "del", "alice@example.test", "international"))
    ok(run("group", "unrequire", "00"))
    assert "requires no group" in failed(run("group", "unrequire", "00"))


# -- forward ------------------------------------------------------------------------------------------------

def test_forward_set_show_clear(run, url):
    assert ok(run("forward", "media", "add", "voicemail", "sip:vm@192.0.2.50:5070")) == \
        "added media destination voicemail -> sip:vm@192.0.2.50:5070\n"
    out = ok(run("forward", "set", "alice@example.test", "--busy", "voicemail", "--no-answer", "+4930123",
                 "--timeout", "15", "--unavailable", "bob@example.test"))
    assert out == ("forwarding of alice@example.test: busy -> voicemail, no-answer -> +4930123, "
                   "unavailable -> sip:bob@example.test, ring timeout 15s\n")
    out = ok(run("forward", "set", "alice@example.test", "--always", "sip:carol@other.test", "--busy", "none"))
    assert "always -> sip:carol@other.test" in out and "busy" not in out
    shown = ok(run("forward", "show", "alice@example.test"))
    assert "sip:+4930123@example.test" in shown and "15s" in shown
    prefs = snapshot(url).forwarding("alice", D)
    assert (prefs.always, prefs.busy, prefs.no_answer_timeout) == ("sip:carol@other.test", None, 15)
    assert "alice@example.test" in ok(run("forward", "list"))
    assert ok(run("forward", "clear", "alice@example.test")) == "cleared forwarding of alice@example.test\n"
    assert ok(run("forward", "show", "alice@example.test")) == "forwarding of alice@example.test: none\n"
    assert failed(run("forward", "clear", "alice@example.test")) == \
        "error: alice@example.test has no forwarding set\n"


def test_forward_refusals(run):
    assert "unknown forwarding target 'voicemail'" in failed(
        run("forward", "set", "alice@example.test", "--busy", "voicemail"))
    assert "nothing to set" in failed(run("forward", "set", "alice@example.test"))
    assert "ring timeout must be 1 to 600" in failed(
        run("forward", "set", "alice@example.test", "--timeout", "900"))
    assert "not a sip: or sips: URI" in failed(run("forward", "media", "add", "vm", "tel:+4930"))
    ok(run("forward", "media", "add", "vm", "sip:vm@192.0.2.5"))
    ok(run("forward", "set", "alice@example.test", "--unavailable", "vm"))
    assert "forwarding target of alice@example.test" in failed(run("forward", "media", "del", "vm"))
    assert "vm" in ok(run("forward", "media", "list"))
    ok(run("forward", "set", "alice@example.test", "--unavailable", "-"))
    assert ok(run("forward", "media", "del", "vm")) == "deleted media destination vm\n"


def test_no_database_configured(tmp_path):
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context):
        ctx.obj = SimpleNamespace(provisioning_url=None)
    app.add_typer(gateway_app, name="gateway")
    result = CliRunner().invoke(app, ["gateway", "list"])
    assert failed(result) == "error: no provisioning database configured\n"
