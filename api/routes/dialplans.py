"""``/v1/dialplans``: ordered regex rewrite rules per dialplan id, and a test of a
number, the REST twin of `sipledger dialplan` (admin only; proxy/routing/service.py)."""
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from proxy.routing import service

from ..deps import Admin, RoutingStoreDep
from ..params import PageParams
from ..schemas_provisioning import DialplanRuleIn, DialplanRuleOut, DialplanTest, Page

router = APIRouter(prefix="/dialplans", tags=["dialplans"])
Dpid = Annotated[int, Path(ge=-(2**63), lt=2**63, description="the dialplan id")]
RuleId = Annotated[int, Path(ge=-(2**63), lt=2**63, description="the rule's id")]


def _fields(body: DialplanRuleIn) -> dict[str, Any]:
    return dict(match=body.match, subst=body.subst, repl=body.repl, priority=body.priority, attrs=body.attrs)


@router.get("", response_model=Page[DialplanRuleOut], summary="Every dialplan's rules, in the order tried")
def list_rules(who: Admin, store: RoutingStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_dialplan(store), DialplanRuleOut.of)


@router.get("/{dpid}", response_model=Page[DialplanRuleOut], summary="One dialplan's rules, in the order tried")
def list_dialplan(who: Admin, store: RoutingStoreDep, dpid: Dpid, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_dialplan(store, dpid), DialplanRuleOut.of)


@router.post("/{dpid}/rules", status_code=201, response_model=DialplanRuleOut,
             summary="Add a rule to a dialplan (`dialplan add`)")
def add_rule(who: Admin, store: RoutingStoreDep, dpid: Dpid, body: DialplanRuleIn) -> DialplanRuleOut:
    return DialplanRuleOut.of(service.add_dialplan_rule(store, dpid, **_fields(body)))


@router.get("/{dpid}/rules/{rule_id}", response_model=DialplanRuleOut, summary="One rule")
def get_rule(who: Admin, store: RoutingStoreDep, dpid: Dpid, rule_id: RuleId) -> DialplanRuleOut:
    return DialplanRuleOut.of(service.get_dialplan_rule(store, rule_id, dpid))


@router.put("/{dpid}/rules/{rule_id}", response_model=DialplanRuleOut, summary="Replace a rule")
def update_rule(who: Admin, store: RoutingStoreDep, dpid: Dpid, rule_id: RuleId,
                body: DialplanRuleIn) -> DialplanRuleOut:
    return DialplanRuleOut.of(service.update_dialplan_rule(store, rule_id, dpid, **_fields(body)))


@router.delete("/{dpid}/rules/{rule_id}", status_code=204, response_class=Response,
               summary="Delete a rule (`dialplan del`)")
def delete_rule(who: Admin, store: RoutingStoreDep, dpid: Dpid, rule_id: RuleId) -> None:
    service.delete_dialplan_rule(store, rule_id, dpid)


_TEST = "Rewrite a number with this dialplan, as the proxy would (`dialplan test`)"


@router.get("/{dpid}/test", response_model=DialplanTest, summary=_TEST)
@router.post("/{dpid}/test", response_model=DialplanTest, summary=_TEST,
             description="The same as GET, for forms that post (nothing is stored).")
def test_dialplan(who: Admin, store: RoutingStoreDep, dpid: Dpid,
                  number: Annotated[str, Query(min_length=1, max_length=128, description="the value to rewrite")],
                  ) -> DialplanTest:
    result, rule = service.test_dialplan(store, dpid, number)
    return DialplanTest(dpid=dpid, number=number, result=result, rule=DialplanRuleOut.of(rule))
