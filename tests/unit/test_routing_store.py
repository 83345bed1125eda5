"""The routing store (provisioning database), its snapshot and live reload;
trusted sources, groups and forwarding as the snapshot answers them."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import insert, update

from proxy.provisioning.store import ProvisioningStore, default_url
from proxy.routing.common import RoutingError
from proxy.routing.dialplan import DialplanRule
from proxy.routing.drouting import (
    BlacklistEntry,
    Carrier,
    Gateway,
    RouteRule,
    parse_gwlist,
    parse_time_window,
)
from proxy.routing.forwarding import (
    Condition,
    ForwardingPrefs,
    ForwardTarget,
    MediaDestination,
    condition_for_status,
    parse_target,
)
from proxy.routing.live import LiveRouting
from proxy.routing.permissions import GroupRequirement, Groups, TrustedSource, TrustedSources
from proxy.routing.probing import GatewayProber
from proxy.routing.snapshot import RoutingSnapshot
from proxy.routing.store import RoutingStore, dialplan_table, forwarding_table, rule_table

D = "example.test"
MONDAY_10 = datetime(2025, 1, 6, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def url(tmp_path):
    return default_url(tmp_path / "data")


@pytest.fixture
def store(url):
    s = RoutingStore(url)
    s.create_schema()
    yield s
    s.close()


def rule(prefix, gateways, weights=None, **kw):
    return RouteRule(prefix, parse_gwlist(gateways, weights), **kw)


def filled(store: RoutingStore) -> None:
    store.add_gateway(Gateway("gw1", "192.0.2.10", 5060, strip=1, prefix="0049", probe="always"))
    store.add_gateway(Gateway("gw2", "192.0.2.20", None, transport="tcp"))
    store.add_carrier(Carrier("c1", parse_gwlist("gw2,gw1", "60,40")))
    store.add_rule(rule("49", "gw1,gw2"))
    store.add_rule(rule("4930", "#c1", groups=frozenset({"vip"}), priority=3,
                        window=parse_time_window("08:00-18:00", "1-5", "Europe/Berlin")))
    store.add_dialplan_rule(DialplanRule(0, r"^0(\d+)$", None, r"+49\1"))
    store.add_dialplan_rule(DialplanRule(0, r"^00", "^00", "+", priority=-1))
    store.add_blacklist(BlacklistEntry("default", "0900"))
    store.add_trusted(TrustedSource("192.0.2.0/24", "udp", "carrier-1"))
    store.add_to_group("alice", D, "international")
    store.require_group("00", "international")
    store.require_group("0", "pstn")
    store.add_media(MediaDestination("voicemail", "sip:vm@192.0.2.50:5070"))
    store.set_forwarding("alice", D, {"busy": "voicemail", "no-answer": "+4930123"}, 15)


# -- the snapshot ----------------------------------------------------------------------------------

def test_snapshot_holds_everything(store):
    filled(store)
    snap = store.snapshot()
    assert snap.version == store.version() > 0
    assert sorted(snap.gateways) == ["gw1", "gw2"]
    routes = snap.select("4940", "default", MONDAY_10, "call-1")
    assert [(r.gateway.name, r.uri) for r in routes] == [
        ("gw1", "sip:0049940@192.0.2.10:5060"), ("gw2", "sip:4940@192.0.2.20;transport=tcp")]
    vip = snap.select("4930555", "vip", MONDAY_10, "call-1")
    assert {r.gateway.name for r in vip} == {"gw1", "gw2"} and all(r.carrier == "c1" for r in vip)
    assert snap.select("4930555", "vip", datetime(2025, 1, 5, 10, tzinfo=timezone.utc)) == []
    assert snap.translate(0, "0301234")[0] == "+49301234"
    assert snap.translate(0, "0044123")[0] == "+44123"          # priority -1 is tried first
    assert snap.blacklisted("default", "0900123").code == 473
    assert snap.is_trusted("192.0.2.77", "udp").tag == "carrier-1"
    assert snap.is_trusted("192.0.2.77", "tcp") is None
    assert snap.in_group("alice", "EXAMPLE.test", "international")
    assert snap.allowed("alice", D, "0044123") == (True, "international")
    assert snap.allowed("alice", D, "030123") == (False, "pstn")
    assert snap.allowed("bob", D, "123") == (True, None)
    prefs = snap.forwarding("alice", D)
    assert prefs.busy == "sip:vm@192.0.2.50:5070" and prefs.no_answer == f"sip:+4930123@{D}"
    assert prefs.always is None and prefs.no_answer_timeout == 15
    assert not snap.forwarding("bob", D) and snap.forwarding("bob", D).no_answer_timeout == 20
    assert "2 gateways" in snap.summary()


def test_a_fresh_database_gives_an_empty_snapshot(store):
    snap = store.snapshot()
    assert snap.version == 0 and snap.select("49", at=MONDAY_10) == []
    assert snap.translate(0, "1") is None and snap.blacklisted("default", "1") is None
    assert not snap.is_trusted("192.0.2.1") and snap.allowed("a", D, "00") == (True, None)
    assert RoutingSnapshot().select("1") == []


def test_routing_and_provisioning_share_the_database_but_not_the_change_counter(url, store):
    prov = ProvisioningStore(url)
    prov.create_schema()
    prov.add_domain(D)
    assert store.version() == 0
    store.add_gateway(Gateway("gw1", "192.0.2.1"))
    assert store.version() == 1 and prov.version() == 1
    prov.close()


def test_every_change_moves_the_version(store):
    versions = [store.version()]
    store.add_gateway(Gateway("gw1", "192.0.2.1"))
    versions.append(store.version())
    store.add_rule(rule("1", "gw1"))
    versions.append(store.version())
    store.set_forwarding("a", D, {Condition.ALWAYS: "1000"})
    versions.append(store.version())
    assert versions == sorted(set(versions))


# -- refusals ---------------------------------------------------------------------------------------------

def test_duplicates_and_missing_references_are_refused(store):
    store.add_gateway(Gateway("gw1", "192.0.2.1"))
    with pytest.raises(RoutingError, match="gateway gw1 already exists"):
        store.add_gateway(Gateway("gw1", "192.0.2.2"))
    with pytest.raises(RoutingError, match="gateway gw9 does not exist"):
        store.add_rule(rule("1", "gw1,gw9"))
    with pytest.raises(RoutingError, match="carrier c1 does not exist"):
        store.add_rule(rule("1", "#c1"))
    with pytest.raises(RoutingError, match="carrier c2: gateway nope does not exist"):
        store.add_carrier(Carrier("c2", parse_gwlist("nope")))
    with pytest.raises(RoutingError, match="route #42 does not exist"):
        store.del_rule(42)
    store.add_blacklist(BlacklistEntry("default", "0900"))
    with pytest.raises(RoutingError, match="already in blacklist default"):
        store.add_blacklist(BlacklistEntry("default", "0900", code=403, reason="x"))
    store.add_trusted(TrustedSource("192.0.2.0/24"))
    with pytest.raises(RoutingError, match="already trusted"):
        store.add_trusted(TrustedSource("192.0.2.0/24", "any"))
    store.add_trusted(TrustedSource("192.0.2.0/24", "tcp"))     # another protocol: another entry


def test_what_is_in_use_cannot_be_deleted(store):
    filled(store)
    with pytest.raises(RoutingError, match=r"gateway gw2 is used by carrier c1, route #1"):
        store.del_gateway("gw2")
    with pytest.raises(RoutingError, match=r"carrier c1 is used by route #2"):
        store.del_carrier("c1")
    with pytest.raises(RoutingError, match="forwarding target of alice@example.test"):
        store.del_media("voicemail")
    store.del_rule(2)
    store.del_carrier("c1")
    store.del_rule(1)
    store.del_gateway("gw2")
    assert [g.name for g in store.list_gateways()] == ["gw1"]


def test_bad_regex_refused_at_add_and_at_load_naming_the_rule(store, url):
    with pytest.raises(RoutingError, match=r"dialplan 0 rule \(priority 0\): bad match regex"):
        store.add_dialplan_rule(DialplanRule(0, "^0(", None, "x"))
    good = store.add_dialplan_rule(DialplanRule(0, "^0", None, "x"))
    # a row broken behind the CLI's back (SQL by hand)
    with store._write() as conn:
        conn.execute(insert(dialplan_table).values(dpid=4, pr=1, match_exp="([", subst_exp=None,
                                                   repl_exp=None, attrs=""))
    with pytest.raises(RoutingError, match=r"dialplan 4 rule #\d+ \(priority 1\): bad match regex '\(\['"):
        store.snapshot()
    assert good == 1


def test_a_bad_stored_route_is_refused_at_load(store):
    store.add_gateway(Gateway("gw1", "192.0.2.1"))
    store.add_rule(rule("1", "gw1"))
    with store._write() as conn:
        conn.execute(update(rule_table).values(gwlist="gw1,ghost"))
    with pytest.raises(RoutingError, match="route #1: unknown gateway ghost"):
        store.snapshot()


# -- dialplan, groups, blacklist, trusted round trips -----------------------------------------------------

def test_dialplan_rules_list_test_and_delete(store):
    a = store.add_dialplan_rule(DialplanRule(1, r"^0(\d+)$", None, r"+49\1", priority=5, attrs="national"))
    b = store.add_dialplan_rule(DialplanRule(1, r"^\+", None, None, priority=1))
    store.add_dialplan_rule(DialplanRule(2, ".*"))
    assert [r.id for r in store.list_dialplan(1)] == [b, a]
    assert store.dialplans().translate(1, "0301")[0] == "+49301"
    assert store.del_dialplan_rule(a).attrs == "national"
    assert store.dialplans().translate(1, "0301") is None
    with pytest.raises(RoutingError, match=f"dialplan rule #{a} does not exist"):
        store.del_dialplan_rule(a)


def test_groups_and_requirements(store):
    store.add_to_group("alice", "Example.TEST", "pstn")
    store.add_to_group("alice", D, "international")
    with pytest.raises(RoutingError, match="already in group pstn"):
        store.add_to_group("alice", D, "pstn")
    assert store.require_group("00", "pstn") is None
    assert store.require_group("00", "international") == "pstn"          # replaced
    assert [(m.address, m.group) for m in store.list_group_members()] == [
        ("alice@example.test", "international"), ("alice@example.test", "pstn")]
    store.remove_from_group("alice", D, "pstn")
    with pytest.raises(RoutingError, match="not in group pstn"):
        store.remove_from_group("alice", D, "pstn")
    store.unrequire_group("00")
    with pytest.raises(RoutingError, match="requires no group"):
        store.unrequire_group("00")
    assert store.list_group_requirements() == []


def test_blacklist_and_trusted_round_trip(store):
    store.add_blacklist(BlacklistEntry("default", "110", exact=True, code=403, reason="Emergency elsewhere"))
    (entry,) = store.list_blacklist("default")
    assert (entry.exact, entry.code, entry.reason) == (True, 403, "Emergency elsewhere")
    with pytest.raises(RoutingError, match="prefix '110' is not in blacklist default"):
        store.del_blacklist("default", "110")
    store.del_blacklist("default", "110", exact=True)
    store.add_trusted(TrustedSource("2001:db8::/32", None, "v6 carrier"))
    assert store.snapshot().is_trusted("2001:db8::7", "tcp").tag == "v6 carrier"
    store.del_trusted("2001:db8::/32")
    with pytest.raises(RoutingError, match="is not trusted"):
        store.del_trusted("2001:db8::/32")


# -- forwarding ---------------------------------------------------------------------------------------------

def test_forwarding_set_merges_and_none_clears_one_condition(store):
    store.add_media(MediaDestination("voicemail", "sip:vm@192.0.2.50"))
    store.set_forwarding("alice", D, {"busy": "voicemail", "unavailable": "bob@Example.TEST"})
    stored = store.set_forwarding("alice", D, {"no-answer": "tel:+4930123"}, 25)
    assert stored.targets == {Condition.BUSY: "voicemail", Condition.UNAVAILABLE: "sip:bob@example.test",
                              Condition.NO_ANSWER: "+4930123"}
    stored = store.set_forwarding("alice", D, {"busy": None})
    assert Condition.BUSY not in stored.targets and stored.no_answer_timeout == 25
    prefs = store.snapshot().forwarding("alice", D)
    assert prefs.target("unavailable") == ForwardTarget("uri", "sip:bob@example.test", "sip:bob@example.test")
    assert prefs.no_answer == f"sip:+4930123@{D}" and prefs.no_answer_timeout == 25
    store.clear_forwarding("alice", D)
    assert store.get_forwarding("alice", D) is None and not store.snapshot().forwarding("alice", D)
    with pytest.raises(RoutingError, match="has no forwarding set"):
        store.clear_forwarding("alice", D)


def test_clearing_the_last_condition_removes_the_row(store):
    store.set_forwarding("alice", D, {"always": "1000"})
    store.set_forwarding("alice", D, {"always": None})
    assert store.list_forwarding() == []


def test_bad_forwarding_is_refused(store):
    with pytest.raises(RoutingError, match="busy: unknown forwarding target 'voicemail'"):
        store.set_forwarding("alice", D, {"busy": "voicemail"})
    with pytest.raises(RoutingError, match="ring timeout must be 1 to 600"):
        store.set_forwarding("alice", D, {}, 0)
    with pytest.raises(RoutingError, match="invalid URI 'sip:'"):
        store.set_forwarding("alice", D, {"always": "sip:"})
    with pytest.raises(RoutingError):
        store.set_forwarding("al ice", D, {"always": "1000"})


def test_a_media_destination_deleted_by_hand_is_refused_at_load(store):
    store.set_forwarding("alice", D, {"busy": "1000"})
    with store._write() as conn:
        conn.execute(update(forwarding_table).values(busy="voicemail"))
    with pytest.raises(RoutingError, match=r"forwarding of alice@example.test \(busy\): unknown"):
        store.snapshot()


def test_forward_targets_resolve_by_kind():
    media = {"voicemail": "sip:vm@192.0.2.50"}
    assert parse_target("voicemail", D, media) == ForwardTarget("media", "voicemail", "sip:vm@192.0.2.50")
    assert parse_target("sips:carol@other.test", D, media).uri == "sips:carol@other.test"
    assert parse_target("carol@Other.Test", D, media).uri == "sip:carol@other.test"
    assert parse_target(" tel:+49301 ", D, media) == ForwardTarget("number", "+49301", f"sip:+49301@{D}")
    assert parse_target("1002", D, media).kind == "number"
    with pytest.raises(RoutingError, match=r"media destination \(voicemail\)"):
        parse_target("voicemial", D, media)
    with pytest.raises(RoutingError, match="a name, not a number"):
        MediaDestination("123", "sip:x@y")


def test_forwarding_decisions_by_status():
    prefs = ForwardingPrefs("a", D, {Condition.BUSY: ForwardTarget("number", "1", "sip:1@d"),
                                     Condition.NO_ANSWER: ForwardTarget("number", "2", "sip:2@d")})
    assert prefs.on_failure(486)[0] is Condition.BUSY
    assert prefs.on_failure(600)[0] is Condition.BUSY
    assert prefs.on_failure(408, ring_timeout=True)[0] is Condition.NO_ANSWER
    assert prefs.on_failure(480) is None                          # no unavailable target
    assert prefs.on_failure(503) is None
    assert condition_for_status(408) is Condition.UNAVAILABLE and condition_for_status(500) is None
    assert prefs and not ForwardingPrefs("a", D)


# -- trusted sources and groups (pure) ----------------------------------------------------------------------

def test_trusted_sources_most_specific_entry_and_protocol():
    sources = TrustedSources([TrustedSource("10.0.0.0/8", None, "wide"),
                              TrustedSource("10.1.0.0/16", "tcp", "tcp-only"),
                              TrustedSource("10.1.2.3", None, "host"),
                              TrustedSource("2001:db8::/48", "udp", "v6")])
    assert sources.is_trusted("10.1.2.3", "udp").tag == "host"
    assert sources.is_trusted("10.1.9.9", "tcp").tag == "tcp-only"
    assert sources.is_trusted("10.1.9.9", "udp").tag == "wide"       # falls back to the wider entry
    assert sources.is_trusted("10.1.9.9").tag == "tcp-only"          # no transport: any protocol
    assert sources.is_trusted("::ffff:10.9.9.9", "UDP").tag == "wide"
    assert sources.is_trusted("[2001:db8::1]", "udp").tag == "v6"
    assert sources.is_trusted("2001:db8::1", "tcp") is None
    assert sources.is_trusted("11.0.0.1", "udp") is None
    assert sources.is_trusted("not-an-ip", "udp") is None
    assert TrustedSources().is_trusted("10.0.0.1") is None


def test_trusted_source_validation():
    with pytest.raises(RoutingError, match="host bits set"):
        TrustedSource("10.0.0.1/8")
    with pytest.raises(RoutingError, match="invalid protocol"):
        TrustedSource("10.0.0.0/8", "sctp")


def test_group_requirements_longest_prefix_decides():
    groups = Groups([("alice", D, "international"), ("bob", "Example.Test", "pstn")],
                    [GroupRequirement("00", "international"), GroupRequirement("0", "pstn")])
    assert groups.allowed("alice", D, "0044") == (True, "international")
    assert groups.allowed("alice", D, "030") == (False, "pstn")
    assert groups.allowed("bob", D, "030") == (True, "pstn")
    assert groups.allowed("bob", D, "0044") == (False, "international")
    assert groups.allowed(None, None, "0044") == (False, "international")
    assert groups.allowed(None, None, "1234") == (True, None)
    assert groups.groups_of("bob", D) == {"pstn"} and not groups.in_group("Bob", D, "pstn")
    with pytest.raises(RoutingError, match="requires two groups"):
        Groups([], [GroupRequirement("0", "a"), GroupRequirement("0", "b")])


# -- live reload ------------------------------------------------------------------------------------------------

def test_a_change_is_picked_up_within_a_poll_interval(url, store):
    live = LiveRouting(RoutingStore(url), poll_interval=1.0)
    assert live.maybe_reload(100.0) is False
    store.add_gateway(Gateway("gw1", "192.0.2.1"))
    store.add_rule(rule("49", "gw1"))                         # e.g. the CLI, another process
    assert live.maybe_reload(100.5) is False                  # not due yet
    assert live.snapshot.select("491", at=MONDAY_10) == []
    assert live.maybe_reload(101.0) is True
    assert [r.gateway.name for r in live.snapshot.select("491", at=MONDAY_10)] == ["gw1"]
    assert live.maybe_reload(102.0) is False


def test_live_routing_keeps_the_old_snapshot_when_the_new_data_is_bad(url, store):
    store.add_dialplan_rule(DialplanRule(0, "^0", None, "x"))
    live = LiveRouting(RoutingStore(url), poll_interval=0)
    with store._write() as conn:
        conn.execute(update(dialplan_table).values(match_exp="(("))
    assert live.maybe_reload(1.0) is False
    assert "bad match regex" in live.last_error
    assert live.snapshot.translate(0, "01")[0] == "x1"
    with store._write() as conn:
        conn.execute(update(dialplan_table).values(match_exp="^1"))
    assert live.maybe_reload(2.0) is True and live.last_error is None


def test_live_routing_feeds_the_prober_the_gateways(url, store):
    store.add_gateway(Gateway("gw1", "192.0.2.1", probe="always"))
    prober = GatewayProber([], interval=10.0, failures_to_down=1)
    live = LiveRouting(RoutingStore(url), poll_interval=0, prober=prober)
    assert [g.name for g in prober.due(0)] == ["gw1"]
    prober.on_timeout("gw1", 1)
    assert not live.is_up("gw1")
    store.add_gateway(Gateway("gw2", "192.0.2.2", probe="always"))
    store.add_rule(rule("1", "gw1,gw2"))
    assert live.maybe_reload(2.0) is True
    assert [g.name for g in prober.due(2.0)] == ["gw2"]            # gw1 keeps its state (probe pending)
    assert not live.is_up("gw1") and live.is_up("gw2")
    routes = live.snapshot.select("1", at=MONDAY_10, is_up=live.is_up)
    assert [r.gateway.name for r in routes] == ["gw2"]             # the dead gateway is skipped
