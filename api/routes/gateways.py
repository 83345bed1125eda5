"""``/v1/gateways``: PSTN gateways with their live probe state, the REST twin of
`sipledger gateway` (admin only; proxy/routing/service.py for both).

``probe_state`` is what the running proxy workers publish (api/quality.py
``probe_states``, the same as ``/v1/quality`` shows per gateway).
"""
from typing import Any

from fastapi import APIRouter, Request, Response

from proxy.routing import service

from ..deps import Admin, RoutingStoreDep
from ..params import NamePath, PageParams
from ..quality import ProbeState, probe_states
from ..schemas_provisioning import GatewayBody, GatewayIn, GatewayOut, Page

router = APIRouter(prefix="/gateways", tags=["gateways"])


def _out(request: Request, gateways: list) -> dict[str, ProbeState]:
    return probe_states(gateways, getattr(request.app.state, "run_dir", None))


@router.get("", response_model=Page[GatewayOut], summary="Gateways, with their probe state")
def list_gateways(who: Admin, store: RoutingStoreDep, paging: PageParams, request: Request) -> dict[str, Any]:
    gateways = service.list_gateways(store)
    states = _out(request, gateways[paging.offset:paging.offset + paging.limit])
    return paging.page(gateways, lambda g: GatewayOut.of(g, states[g.name]))


@router.post("", status_code=201, response_model=GatewayOut, summary="Add a gateway (`gateway add`)")
def add_gateway(who: Admin, store: RoutingStoreDep, body: GatewayIn, request: Request) -> GatewayOut:
    g = service.add_gateway(store, body.name, body.address, body.transport, body.strip, body.prefix, body.probe,
                            body.attrs)
    return GatewayOut.of(g, _out(request, [g])[g.name])


@router.get("/{name}", response_model=GatewayOut, summary="One gateway, with its probe state")
def get_gateway(who: Admin, store: RoutingStoreDep, name: NamePath, request: Request) -> GatewayOut:
    g = service.get_gateway(store, name)
    return GatewayOut.of(g, _out(request, [g])[g.name])


@router.put("/{name}", response_model=GatewayOut, summary="Replace a gateway's settings (routes keep it)")
def update_gateway(who: Admin, store: RoutingStoreDep, name: NamePath, body: GatewayBody,
                   request: Request) -> GatewayOut:
    g = service.update_gateway(store, name, body.address, body.transport, body.strip, body.prefix, body.probe,
                               body.attrs)
    return GatewayOut.of(g, _out(request, [g])[g.name])


@router.delete("/{name}", status_code=204, response_class=Response,
               summary="Delete a gateway; refused while a carrier or route uses it (`gateway del`)")
def delete_gateway(who: Admin, store: RoutingStoreDep, name: NamePath) -> None:
    service.delete_gateway(store, name)
