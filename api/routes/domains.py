"""``/v1/domains``: the domains this proxy serves, the REST twin of `sipledger domain`
(admin only; proxy/provisioning/service.py for both)."""
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from proxy.provisioning import service

from ..deps import Admin, ProvisioningStoreDep
from ..params import PageParams
from ..schemas_provisioning import Domain, DomainIn, Page

router = APIRouter(prefix="/domains", tags=["domains"])
DomainPath = Annotated[str, Path(min_length=1, max_length=255)]


@router.get("", response_model=Page[Domain], summary="Served domains")
def list_domains(who: Admin, store: ProvisioningStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_domains(store), lambda d: Domain(domain=d))


@router.post("", status_code=201, response_model=Domain, summary="Serve a domain (`domain add`)")
def add_domain(who: Admin, store: ProvisioningStoreDep, body: DomainIn) -> Domain:
    return Domain(domain=service.add_domain(store, body.domain))


@router.get("/{domain}", response_model=Domain, summary="One served domain")
def get_domain(who: Admin, store: ProvisioningStoreDep, domain: DomainPath) -> Domain:
    return Domain(domain=service.get_domain(store, domain))


@router.delete("/{domain}", status_code=204, response_class=Response,
               summary="Stop serving a domain; refused while users or aliases use it (`domain del`)")
def delete_domain(who: Admin, store: ProvisioningStoreDep, domain: DomainPath) -> None:
    service.delete_domain(store, domain)
