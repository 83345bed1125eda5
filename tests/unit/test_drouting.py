"""Dynamic routing to gateways: prefixes, groups, time windows, priorities, weights, blacklists."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.routing.common import RoutingError
from proxy.routing.drouting import (
    BlacklistEntry,
    Blacklists,
    Carrier,
    DRouting,
    Gateway,
    GatewayRef,
    ProbeMode,
    RouteRule,
    TimeWindow,
    format_gwlist,
    parse_address,
    parse_gwlist,
    parse_time_window,
    parse_weekdays,
)

MONDAY_10 = datetime(2025, 1, 6, 10, 0, tzinfo=timezone.utc)      # a Monday
SUNDAY_10 = datetime(2025, 1, 5, 10, 0, tzinfo=timezone.utc)


def gw(name, host="192.0.2.1", port=5060, **kw):
    return Gateway(name, host, port, **kw)


def refs(text, weights=None):
    return parse_gwlist(text, weights)


def rule(prefix, gateways, *, id, group="default", priority=0, window=None, weights=None):
    groups = frozenset(group.split(","))
    return RouteRule(prefix, refs(gateways, weights), groups, priority, window, "", id)


GATEWAYS = [gw("gw1", "192.0.2.1"), gw("gw2", "192.0.2.2"), gw("gw3", "192.0.2.3"), gw("gw4", "192.0.2.4")]


def names(routes):
    return [r.gateway.name for r in routes]


# -- longest prefix, groups ---------------------------------------------------------------------

def test_longest_prefix_wins_and_the_empty_prefix_catches_the_rest():
    dr = DRouting(GATEWAYS, rules=[rule("", "gw4", id=1), rule("49", "gw1", id=2), rule("4930", "gw2", id=3)])
    assert names(dr.select("4930123", at=MONDAY_10)) == ["gw2"]
    assert names(dr.select("4940123", at=MONDAY_10)) == ["gw1"]
    assert names(dr.select("33123", at=MONDAY_10)) == ["gw4"]
    assert names(dr.select("49", at=MONDAY_10)) == ["gw1"]


def test_no_matching_rule_is_an_empty_list():
    dr = DRouting(GATEWAYS, rules=[rule("49", "gw1", id=1)])
    assert dr.select("33", at=MONDAY_10) == []


def test_rules_apply_only_to_their_groups():
    dr = DRouting(GATEWAYS, rules=[rule("49", "gw1", id=1), rule("49", "gw2", id=2, group="premium,vip")])
    assert names(dr.select("491", "default", MONDAY_10)) == ["gw1"]
    assert names(dr.select("491", "vip", MONDAY_10)) == ["gw2"]
    assert dr.select("491", "other", MONDAY_10) == []


def test_a_shorter_prefix_serves_a_group_the_longer_one_does_not():
    dr = DRouting(GATEWAYS, rules=[rule("4930", "gw1", id=1, group="vip"), rule("49", "gw2", id=2)])
    assert names(dr.select("4930123", "default", MONDAY_10)) == ["gw2"]


# -- failover list, strip / prefix, down gateways -------------------------------------------------

def test_the_failover_list_keeps_the_rule_order_and_rewrites_per_gateway():
    gws = [gw("a", "192.0.2.10", 5060, strip=1, prefix="0049"),
           gw("b", "gw.example.net", None, transport="tcp"),
           gw("c", "2001:db8::5", 5070, prefix="+")]
    dr = DRouting(gws, rules=[rule("0", "a,b,c", id=1)])
    routes = dr.select("0301234", at=MONDAY_10)
    assert [(r.gateway.name, r.number, r.uri) for r in routes] == [
        ("a", "0049301234", "sip:0049301234@192.0.2.10:5060"),
        ("b", "0301234", "sip:0301234@gw.example.net;transport=tcp"),
        ("c", "+0301234", "sip:+0301234@[2001:db8::5]:5070"),
    ]
    assert all(r.rule.id == 1 and r.carrier is None for r in routes)


def test_strip_longer_than_the_number_leaves_only_the_prefix():
    assert gw("a", strip=5, prefix="9").rewrite("123") == "9"


def test_down_gateways_are_skipped():
    dr = DRouting(GATEWAYS, rules=[rule("49", "gw1,gw2,gw3", id=1)])
    up = lambda name: name != "gw2"                                  # noqa: E731
    assert names(dr.select("491", at=MONDAY_10, is_up=up)) == ["gw1", "gw3"]


def test_when_every_gateway_of_the_best_rule_is_down_the_next_rule_serves():
    dr = DRouting(GATEWAYS, rules=[rule("4930", "gw1", id=1), rule("49", "gw2,gw3", id=2)])
    assert names(dr.select("4930", at=MONDAY_10, is_up=lambda n: n != "gw1")) == ["gw2", "gw3"]
    assert dr.select("4930", at=MONDAY_10, is_up=lambda n: False) == []


def test_carriers_expand_in_place_and_a_gateway_is_tried_once():
    carrier = Carrier("c1", refs("gw2,gw3"))
    dr = DRouting(GATEWAYS, [carrier], [rule("49", "gw3,#c1,gw4", id=1)])
    routes = dr.select("491", at=MONDAY_10)
    assert names(routes) == ["gw3", "gw2", "gw4"]
    assert [r.carrier for r in routes] == [None, "c1", None]


def test_unknown_gateways_and_carriers_are_refused_naming_the_rule():
    with pytest.raises(RoutingError, match="route #7: unknown gateway nope"):
        DRouting(GATEWAYS, rules=[rule("4", "gw1,nope", id=7)])
    with pytest.raises(RoutingError, match="route #8: unknown carrier c9"):
        DRouting(GATEWAYS, rules=[rule("4", "#c9", id=8)])
    with pytest.raises(RoutingError, match="carrier c1: unknown gateway x"):
        DRouting(GATEWAYS, [Carrier("c1", refs("x"))])


def test_from_gateway_finds_the_gateway_by_source_address():
    dr = DRouting([gw("a", "192.0.2.10", 5060), gw("b", "2001:db8::5", None)])
    assert dr.from_gateway("192.0.2.10").name == "a"
    assert dr.from_gateway("192.0.2.10", 5060).name == "a"
    assert dr.from_gateway("192.0.2.10", 5080) is None
    assert dr.from_gateway("[2001:db8::5]", 5999).name == "b"
    assert dr.from_gateway("192.0.2.99") is None


# -- priorities -------------------------------------------------------------------------------------

def test_where_rules_of_one_prefix_overlap_the_higher_priority_wins():
    weekend = parse_time_window(None, "6-7")
    dr = DRouting(GATEWAYS, rules=[rule("49", "gw1", id=1, priority=1),
                                   rule("49", "gw2", id=2, priority=4, window=weekend)])
    assert names(dr.select("491", at=SUNDAY_10)) == ["gw2"]
    assert names(dr.select("491", at=MONDAY_10)) == ["gw1"]


def test_equal_priorities_keep_the_older_rule_first():
    dr = DRouting(GATEWAYS, rules=[rule("49", "gw2", id=5), rule("49", "gw1", id=3)])
    assert names(dr.select("491", at=MONDAY_10)) == ["gw1"]
    assert [r.id for r in dr.candidates("491", "default", MONDAY_10)] == [3, 5]


# -- time windows ---------------------------------------------------------------------------------------

def test_office_hours_on_weekdays():
    w = parse_time_window("08:00-18:00", "1-5")
    assert w.contains(MONDAY_10)
    assert not w.contains(SUNDAY_10)
    assert w.contains(datetime(2025, 1, 6, 8, 0, tzinfo=timezone.utc))          # start inclusive
    assert not w.contains(datetime(2025, 1, 6, 18, 0, tzinfo=timezone.utc))     # end exclusive
    assert not w.contains(datetime(2025, 1, 6, 7, 59, tzinfo=timezone.utc))


def test_a_night_window_belongs_to_the_day_it_starts():
    w = parse_time_window("22:00-06:00", "fri")
    assert w.contains(datetime(2025, 1, 10, 23, 0, tzinfo=timezone.utc))        # Friday night
    assert w.contains(datetime(2025, 1, 11, 5, 59, tzinfo=timezone.utc))        # Saturday morning
    assert not w.contains(datetime(2025, 1, 10, 5, 0, tzinfo=timezone.utc))     # Friday morning: Thursday's night
    assert not w.contains(datetime(2025, 1, 11, 22, 30, tzinfo=timezone.utc))   # Saturday night


def test_windows_are_in_the_rule_time_zone():
    w = parse_time_window("08:00-09:00", None, "Europe/Berlin")
    assert w.contains(datetime(2025, 1, 6, 7, 30, tzinfo=timezone.utc))         # 08:30 in Berlin (CET)
    assert w.contains(datetime(2025, 7, 7, 6, 30, tzinfo=timezone.utc))         # 08:30 in Berlin (CEST)
    assert not w.contains(datetime(2025, 1, 6, 8, 30, tzinfo=timezone.utc))


def test_select_takes_unix_time_and_naive_datetimes_as_utc():
    dr = DRouting(GATEWAYS, rules=[rule("4", "gw1", id=1, window=parse_time_window("08:00-18:00", "1-5"))])
    assert names(dr.select("4", at=MONDAY_10.timestamp())) == ["gw1"]
    assert names(dr.select("4", at=datetime(2025, 1, 6, 10, 0))) == ["gw1"]
    assert dr.select("4", at=SUNDAY_10.timestamp()) == []
    assert dr.select("4", at=None) == []                # no clock: timed rules never match


def test_time_window_text_round_trips():
    w = parse_time_window("08:00-18:30", "mon-fri,7", "Europe/Paris")
    assert (w.start, w.end, w.weekdays, w.tz) == (480, 1110, frozenset({1, 2, 3, 4, 5, 7}), "Europe/Paris")
    assert str(w) == "08:00-18:30 days 1-5,7 Europe/Paris"
    assert parse_time_window(None, None) is None
    assert parse_time_window("00:00-24:00").contains(SUNDAY_10)


@pytest.mark.parametrize("times, days, tz, message", [
    ("8-18", None, None, "invalid time"),
    ("08:00", None, None, "HH:MM-HH:MM"),
    ("08:00-08:00", None, None, "two different times"),
    ("25:00-26:00", None, None, "invalid time"),
    ("24:00-01:00", None, None, "starts at 24:00"),
    (None, "0-5", None, "invalid weekday"),
    (None, "5-1", None, "6-7,1 rather than"),
    (None, "1-5", "Mars/Olympus", "unknown time zone"),
])
def test_bad_time_windows_are_refused(times, days, tz, message):
    with pytest.raises(RoutingError, match=message):
        parse_time_window(times, days, tz)


def test_weekday_parsing():
    assert parse_weekdays("1-3,5") == {1, 2, 3, 5}
    assert parse_weekdays("sat,sun") == {6, 7}
    assert TimeWindow(0, 60, frozenset({1})).days == "1"


# -- weights ----------------------------------------------------------------------------------------------

def test_weighted_order_is_the_same_for_the_same_call():
    dr = DRouting(GATEWAYS, rules=[rule("4", "gw1,gw2,gw3", id=1, weights="50,30,20")])
    first = names(dr.select("4", at=MONDAY_10, call_key="call-1@host"))
    for _ in range(5):
        assert names(dr.select("4", at=MONDAY_10, call_key="call-1@host")) == first
    orders = {tuple(names(dr.select("4", at=MONDAY_10, call_key=f"c{i}"))) for i in range(200)}
    assert len(orders) > 1 and all(sorted(o) == ["gw1", "gw2", "gw3"] for o in orders)


def test_weights_share_the_first_choice_in_proportion():
    dr = DRouting(GATEWAYS, rules=[rule("4", "gw1,gw2", id=1, weights="70,30")])
    first = Counter(names(dr.select("4", at=MONDAY_10, call_key=f"call-{i}"))[0] for i in range(4000))
    assert 0.66 < first["gw1"] / 4000 < 0.74


def test_weight_zero_is_a_last_resort_in_list_order():
    dr = DRouting(GATEWAYS, rules=[rule("4", "gw1,gw2,gw3,gw4", id=1, weights="0,5,0,5")])
    for i in range(50):
        order = names(dr.select("4", at=MONDAY_10, call_key=str(i)))
        assert sorted(order[:2]) == ["gw2", "gw4"] and order[2:] == ["gw1", "gw3"]


def test_weighted_carriers_are_ordered_by_their_own_weights():
    carrier = Carrier("c", refs("gw1,gw2", "1,1000000"))
    dr = DRouting(GATEWAYS, [carrier], [rule("4", "#c,gw3", id=1)])
    counts = Counter(names(dr.select("4", at=MONDAY_10, call_key=str(i)))[0] for i in range(200))
    assert counts["gw2"] >= 195


@given(st.text(max_size=40))
def test_any_call_key_gives_a_permutation_of_the_up_gateways(key):
    dr = DRouting(GATEWAYS, rules=[rule("4", "gw1,gw2,gw3,gw4", id=1, weights="1,2,3,0")])
    order = names(dr.select("4", at=MONDAY_10, call_key=key, is_up=lambda n: n != "gw3"))
    assert sorted(order) == ["gw1", "gw2", "gw4"] and order[-1] == "gw4"
    assert order == names(dr.select("4", at=MONDAY_10, call_key=key, is_up=lambda n: n != "gw3"))


# -- gateway lists and addresses --------------------------------------------------------------------------

def test_gateway_lists_parse_and_format_in_the_stored_form():
    parsed = parse_gwlist("gw1, #c1", "70,30")
    assert parsed == (GatewayRef("gw1", 70), GatewayRef("c1", 30, True))
    assert format_gwlist(parsed) == "gw1=70,#c1=30"
    assert parse_gwlist(format_gwlist(parsed)) == parsed
    assert parse_gwlist(["a", "b"]) == (GatewayRef("a"), GatewayRef("b"))


@pytest.mark.parametrize("names_, weights, message", [
    ("gw1,gw2", "70", "1 weight"),
    ("gw1=5,gw2", None, "every gateway or for none"),
    ("gw1,gw1", None, "listed twice"),
    ("", None, "give gateway names"),
    ("gw1,,gw2", None, "give gateway names"),
    ("gw1", "x", "invalid weight"),
    ("gw1", "-1", "weights must be"),
    ("gw 1", None, "invalid gateway name"),
])
def test_bad_gateway_lists_are_refused(names_, weights, message):
    with pytest.raises(RoutingError, match=message):
        parse_gwlist(names_, weights)


def test_carriers_cannot_nest():
    with pytest.raises(RoutingError, match="cannot contain a carrier"):
        parse_gwlist("#c", carriers=False)


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.10:5060", ("192.0.2.10", 5060)),
    ("GW.Example.NET", ("gw.example.net", None)),
    ("[2001:db8::1]:5070", ("[2001:db8::1]", 5070)),
    ("2001:db8::1", ("[2001:db8::1]", None)),
])
def test_gateway_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:x", "bad host", "-host"])
def test_bad_gateway_addresses(text):
    with pytest.raises(RoutingError):
        parse_address(text)


@pytest.mark.parametrize("kw, message", [
    (dict(transport="tls"), "transport must be"),
    (dict(strip=-1), "strip must be"),
    (dict(prefix="00 49"), "invalid prefix"),
    (dict(probe="sometimes"), "invalid probe mode"),
])
def test_bad_gateways_are_refused(kw, message):
    with pytest.raises(RoutingError, match=message):
        gw("g", **kw)


def test_gateway_uri_for_probes_and_defaults():
    g = gw("g", "192.0.2.9", None, probe="when-down")
    assert g.probe is ProbeMode.WHEN_DOWN and g.uri() == "sip:192.0.2.9" and g.address == "192.0.2.9"


# -- blacklists --------------------------------------------------------------------------------------------

def test_blacklists_longest_prefix_exact_entries_and_separate_lists():
    lists = Blacklists([
        BlacklistEntry("default", "0900"),
        BlacklistEntry("default", "09001", code=403, reason="Premium Forbidden"),
        BlacklistEntry("default", "110", exact=True),
        BlacklistEntry("night", "00"),
    ])
    assert lists.blacklisted("default", "0900555").reason == "Filtered Destination"
    assert lists.blacklisted("default", "0900555").code == 473
    assert lists.blacklisted("default", "0900155").code == 403
    assert lists.blacklisted("default", "110").exact
    assert lists.blacklisted("default", "1100") is None
    assert lists.blacklisted("default", "0049") is None
    assert lists.blacklisted("night", "0049").prefix == "00"
    assert lists.blacklisted("nope", "0900") is None
    assert lists.names == ["default", "night"] and len(lists) == 4


def test_an_exact_entry_and_a_prefix_entry_for_the_same_digits():
    lists = Blacklists([BlacklistEntry("l", "12", code=410, reason="Gone"),
                        BlacklistEntry("l", "12", exact=True, code=404, reason="Exact")])
    assert lists.blacklisted("l", "12").code == 404
    assert lists.blacklisted("l", "123").code == 410


@pytest.mark.parametrize("kw, message", [
    (dict(code=200), "status must be 400 to 699"),
    (dict(reason=""), "reason must be"),
    (dict(prefix="", exact=True), "needs a number"),
    (dict(prefix="09 00"), "invalid blacklist"),
])
def test_bad_blacklist_entries(kw, message):
    args = dict(list="default", prefix="0900") | kw
    with pytest.raises(RoutingError, match=message):
        BlacklistEntry(**args)
