"""``/v1/aliases``: extra addresses of subscribers, the REST twin of `sipledger alias`
(admin only; proxy/provisioning/service.py for both)."""
from typing import Any

from fastapi import APIRouter, Response

from proxy.provisioning import service

from ..deps import Admin, ProvisioningStoreDep
from ..params import AddressPath, PageParams
from ..schemas_provisioning import Alias, AliasIn, Page

router = APIRouter(prefix="/aliases", tags=["aliases"])


@router.get("", response_model=Page[Alias], summary="Aliases")
def list_aliases(who: Admin, store: ProvisioningStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_aliases(store), Alias.of)


@router.post("", status_code=201, response_model=Alias, summary="Make an alias reach a subscriber (`alias add`)")
def add_alias(who: Admin, store: ProvisioningStoreDep, body: AliasIn) -> Alias:
    return Alias.of(service.add_alias(store, body.alias, body.target))


@router.get("/{alias}", response_model=Alias, summary="One alias")
def get_alias(who: Admin, store: ProvisioningStoreDep, alias: AddressPath) -> Alias:
    return Alias.of(service.get_alias(store, alias))


@router.delete("/{alias}", status_code=204, response_class=Response, summary="Delete an alias (`alias del`)")
def delete_alias(who: Admin, store: ProvisioningStoreDep, alias: AddressPath) -> None:
    service.delete_alias(store, alias)
