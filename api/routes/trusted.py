"""``/v1/trusted``: sources (gateways calling in) never challenged, the REST twin of
`sipledger trusted` (admin only; proxy/routing/service.py).  A source is named
by its address or subnet, slash included (``/v1/trusted/192.0.2.0/24``), and
``proto``."""
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from proxy.routing import service

from ..deps import Admin, RoutingStoreDep
from ..params import PageParams
from ..schemas_provisioning import Page, TrustedIn, TrustedOut

router = APIRouter(prefix="/trusted", tags=["trusted"])
CidrPath = Annotated[str, Path(min_length=1, max_length=64, description="address[/bits]")]
Proto = Annotated[str | None, Query(max_length=8, description="udp or tcp; none = any")]


@router.get("", response_model=Page[TrustedOut], summary="Trusted sources")
def list_sources(who: Admin, store: RoutingStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_trusted(store), TrustedOut.of)


@router.post("", status_code=201, response_model=TrustedOut,
             summary="Trust requests from an address or subnet (`trusted add`)")
def add_source(who: Admin, store: RoutingStoreDep, body: TrustedIn) -> TrustedOut:
    return TrustedOut.of(service.add_trusted(store, body.cidr, body.proto, body.tag))


@router.get("/{cidr:path}", response_model=TrustedOut, summary="One trusted source")
def get_source(who: Admin, store: RoutingStoreDep, cidr: CidrPath, proto: Proto = None) -> TrustedOut:
    return TrustedOut.of(service.get_trusted(store, cidr, proto))


@router.delete("/{cidr:path}", status_code=204, response_class=Response,
               summary="Stop trusting an address or subnet (`trusted del`)")
def delete_source(who: Admin, store: RoutingStoreDep, cidr: CidrPath, proto: Proto = None) -> None:
    service.delete_trusted(store, cidr, proto)
