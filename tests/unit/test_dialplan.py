"""Dialplan: ordered regex match / substitute rules (OpenSIPS dialplan semantics)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.routing.common import RoutingError
from proxy.routing.dialplan import DialplanRule, Dialplans


def rule(match, repl=None, subst=None, *, dpid=0, priority=0, attrs="", id=0):
    return DialplanRule(dpid, match, subst, repl, priority, attrs, id)


def test_national_number_gets_the_country_code():
    plans = Dialplans([rule(r"^0(\d+)$", r"+49\1", id=1)])
    new, applied = plans.translate(0, "0301234567")
    assert new == "+49301234567" and applied.id == 1


def test_separate_substitution_expression_replaces_only_its_match():
    plans = Dialplans([rule(r"^00[1-9]", "+", subst="^00")])
    assert plans.translate(0, "004420712345")[0] == "+4420712345"


def test_without_replacement_the_value_is_unchanged_but_the_rule_matches():
    plans = Dialplans([rule(r"^\+", attrs="e164", id=4)])
    new, applied = plans.translate(0, "+4930")
    assert new == "+4930" and applied.attrs == "e164"


def test_first_matching_rule_by_ascending_priority_then_insertion_order():
    plans = Dialplans([
        rule(r"^0", "late", priority=10, id=1),
        rule(r"^0", "second", priority=5, id=3),
        rule(r"^0", "first", priority=5, id=2),
        rule(r"^1", "other", priority=0, id=4),
    ])
    assert [r.id for r in plans.rules(0)] == [4, 2, 3, 1]
    assert plans.translate(0, "0123") == ("first123", plans.rules(0)[1])


def test_dialplans_are_separate_and_no_match_is_none():
    plans = Dialplans([rule(r"^0(\d+)$", r"+49\1", dpid=1), rule(r"^0(\d+)$", r"+33\1", dpid=2)])
    assert plans.translate(1, "0123")[0] == "+49123"
    assert plans.translate(2, "0123")[0] == "+33123"
    assert plans.translate(3, "0123") is None
    assert plans.translate(1, "123") is None
    assert plans.ids == [1, 2] and len(plans) == 2


def test_match_is_a_search_and_replacement_happens_once():
    plans = Dialplans([rule("55", "X")])
    assert plans.translate(0, "1555")[0] == "1X5"                 # unanchored, first occurrence only


def test_named_groups_and_empty_replacement():
    plans = Dialplans([rule(r"^(?P<cc>\d{2})(?P<rest>\d+)$", r"\g<rest>-\g<cc>"),
                       rule(r"^9", "", dpid=1)])
    assert plans.translate(0, "49301")[0] == "301-49"
    assert plans.translate(1, "9123")[0] == "123"           # "" replaces the match only


@pytest.mark.parametrize("kwargs, words", [
    (dict(match=r"^0(\d+$"), ["dialplan 3 rule #7", "bad match regex", "missing )"]),
    (dict(match=r"^0", subst="(["), ["dialplan 3 rule #7", "bad substitution regex"]),
    (dict(match=r"^0(\d+)$", repl=r"+49\2"), ["dialplan 3 rule #7", "bad replacement", "invalid group reference 2"]),
    (dict(match=r"^0", subst=r"^0(\d)", repl=r"\g<nope>"), ["bad replacement", "unknown group name"]),
    (dict(match=r"^0", repl="\\"), ["bad replacement"]),
    (dict(match=""), ["match expression must be"]),
    (dict(match="^0", repl="a\nb"), ["replacement must be one line"]),
])
def test_bad_rules_are_refused_naming_the_rule(kwargs, words):
    with pytest.raises(RoutingError) as info:
        DialplanRule(3, kwargs.pop("match"), priority=2, id=7, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_replacement_refers_to_the_substitution_groups_when_there_is_one():
    # \1 exists in the match expression but not in the substitution expression
    with pytest.raises(RoutingError, match="invalid group reference 1"):
        DialplanRule(0, r"^(0)", "^0", r"\1")
    assert DialplanRule(0, "^0", r"^0(\d)", r"\1").apply("05") == "5"


@pytest.mark.parametrize("dpid", [-1, 2**31, "1"])
def test_dialplan_id_must_be_a_non_negative_int(dpid):
    with pytest.raises(RoutingError, match="dialplan id"):
        DialplanRule(dpid, "^0")


@given(st.text(alphabet="0123456789+*#", max_size=20))
def test_identity_rules_leave_any_number_alone(number):
    plans = Dialplans([rule(r"^(.*)$", r"\1"), rule(".*", dpid=1)])
    assert plans.translate(0, number)[0] == number
    assert plans.translate(1, number)[0] == number


@given(st.text(alphabet="0123456789", min_size=1, max_size=15))
def test_the_national_rule_is_exactly_strip_zero_add_country_code(digits):
    plans = Dialplans([rule(r"^0(\d+)$", r"+49\1")])
    assert plans.translate(0, "0" + digits)[0] == "+49" + digits
    assert plans.translate(0, "1" + digits) is None
