"""``/v1/routes``: routes to gateways by number prefix, group, time and priority,
the REST twin of `sipledger route` (admin only; proxy/routing/service.py).
Named dialroutes.py: ``routes`` is this package."""
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from proxy.routing import service
from proxy.routing.drouting import DEFAULT_GROUP

from ..deps import Admin, RoutingStoreDep
from ..params import PageParams
from ..schemas_provisioning import Page, RouteIn, RouteOut, RouteStepOut, RouteTest

router = APIRouter(prefix="/routes", tags=["routes"])
RouteId = Annotated[int, Path(ge=-(2**63), lt=2**63, description="the route's id")]


def _fields(body: RouteIn) -> dict[str, Any]:
    return dict(prefix=body.prefix, gateways=body.gateways, groups=body.groups, priority=body.priority,
                weights=body.weights, time_window=body.time, weekdays=body.weekdays, tz=body.tz, attrs=body.attrs)


@router.get("", response_model=Page[RouteOut], summary="Routes, by prefix and the higher priority first")
def list_routes(who: Admin, store: RoutingStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_routes(store), RouteOut.of)


@router.post("", status_code=201, response_model=RouteOut, summary="Add a route (`route add`)")
def add_route(who: Admin, store: RoutingStoreDep, body: RouteIn) -> RouteOut:
    return RouteOut.of(service.add_route(store, **_fields(body)))


@router.get("/test", response_model=RouteTest,
            summary="The gateways a call to a number would try, in order (`route test`)")
def test_route(who: Admin, store: RoutingStoreDep,
               number: Annotated[str, Query(min_length=1, max_length=64, description="the dialled number")],
               group: Annotated[str, Query(max_length=64, description="the caller's routing group")] = DEFAULT_GROUP,
               at: Annotated[str | None, Query(max_length=40, description="ISO 8601 instead of now")] = None,
               call_id: Annotated[str, Query(max_length=255, description="seed of weighted orders")] = "",
               ) -> RouteTest:
    steps = service.test_route(store, number, group, at, call_id)
    return RouteTest(number=number, group=group, routes=[RouteStepOut.of(s) for s in steps])


@router.get("/{route_id}", response_model=RouteOut, summary="One route")
def get_route(who: Admin, store: RoutingStoreDep, route_id: RouteId) -> RouteOut:
    return RouteOut.of(service.get_route(store, route_id))


@router.put("/{route_id}", response_model=RouteOut, summary="Replace a route (its id is kept)")
def update_route(who: Admin, store: RoutingStoreDep, route_id: RouteId, body: RouteIn) -> RouteOut:
    return RouteOut.of(service.update_route(store, route_id, **_fields(body)))


@router.delete("/{route_id}", status_code=204, response_class=Response, summary="Delete a route (`route del`)")
def delete_route(who: Admin, store: RoutingStoreDep, route_id: RouteId) -> None:
    service.delete_route(store, route_id)
