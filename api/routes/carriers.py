"""``/v1/carriers``: named, optionally weighted, groups of gateways (``#name`` in
routes), the REST twin of `sipledger carrier` (admin only; proxy/routing/service.py)."""
from typing import Any

from fastapi import APIRouter, Response

from proxy.routing import service

from ..deps import Admin, RoutingStoreDep
from ..params import NamePath, PageParams
from ..schemas_provisioning import CarrierBody, CarrierIn, CarrierOut, Page

router = APIRouter(prefix="/carriers", tags=["carriers"])


@router.get("", response_model=Page[CarrierOut], summary="Carriers")
def list_carriers(who: Admin, store: RoutingStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_carriers(store), CarrierOut.of)


@router.post("", status_code=201, response_model=CarrierOut, summary="Add a carrier (`carrier add`)")
def add_carrier(who: Admin, store: RoutingStoreDep, body: CarrierIn) -> CarrierOut:
    return CarrierOut.of(service.add_carrier(store, body.name, body.gateways, body.weights, body.attrs))


@router.get("/{name}", response_model=CarrierOut, summary="One carrier")
def get_carrier(who: Admin, store: RoutingStoreDep, name: NamePath) -> CarrierOut:
    return CarrierOut.of(service.get_carrier(store, name))


@router.put("/{name}", response_model=CarrierOut, summary="Replace a carrier's gateways (routes keep it)")
def update_carrier(who: Admin, store: RoutingStoreDep, name: NamePath, body: CarrierBody) -> CarrierOut:
    return CarrierOut.of(service.update_carrier(store, name, body.gateways, body.weights, body.attrs))


@router.delete("/{name}", status_code=204, response_class=Response,
               summary="Delete a carrier; refused while a route uses it (`carrier del`)")
def delete_carrier(who: Admin, store: RoutingStoreDep, name: NamePath) -> None:
    service.delete_carrier(store, name)
