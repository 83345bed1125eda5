"""``/v1/blacklists``: destinations never routed (473 Filtered Destination), and a
test of a number, the REST twin of `sipledger blacklist` (admin only;
proxy/routing/service.py).  An entry is named by its list, prefix and ``exact``."""
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from proxy.routing import service

from ..deps import Admin, RoutingStoreDep
from ..params import NamePath, PageParams
from ..schemas_provisioning import BlacklistIn, BlacklistOut, BlacklistTest, Page

router = APIRouter(prefix="/blacklists", tags=["blacklists"])
PrefixPath = Annotated[str, Path(min_length=1, max_length=32, description="the entry's prefix (or number)")]
Exact = Annotated[bool, Query(description="the exact-number entry, not the prefix one")]


@router.get("", response_model=Page[BlacklistOut], summary="Blacklist entries")
def list_entries(who: Admin, store: RoutingStoreDep, paging: PageParams,
                 list_: Annotated[str | None, Query(alias="list", max_length=64, description="only this list")] = None,
                 ) -> dict[str, Any]:
    return paging.page(service.list_blacklist(store, list_), BlacklistOut.of)


@router.post("", status_code=201, response_model=BlacklistOut,
             summary="Never route numbers starting with a prefix (`blacklist add`)")
def add_entry(who: Admin, store: RoutingStoreDep, body: BlacklistIn) -> BlacklistOut:
    return BlacklistOut.of(service.add_blacklist(store, body.list, body.prefix, body.exact, body.code, body.reason))


@router.get("/{list_name}/entries/{prefix}", response_model=BlacklistOut, summary="One blacklist entry")
def get_entry(who: Admin, store: RoutingStoreDep, list_name: NamePath, prefix: PrefixPath,
              exact: Exact = False) -> BlacklistOut:
    return BlacklistOut.of(service.get_blacklist(store, list_name, prefix, exact))


@router.delete("/{list_name}/entries/{prefix}", status_code=204, response_class=Response,
               summary="Remove an entry from a blacklist (`blacklist del`)")
def delete_entry(who: Admin, store: RoutingStoreDep, list_name: NamePath, prefix: PrefixPath,
                 exact: Exact = False) -> None:
    service.delete_blacklist(store, list_name, prefix, exact)


@router.get("/{list_name}/test", response_model=BlacklistTest, summary="Is a number blacklisted? (`blacklist test`)")
def test_number(who: Admin, store: RoutingStoreDep, list_name: NamePath,
                number: Annotated[str, Query(min_length=1, max_length=64)]) -> BlacklistTest:
    entry = service.test_blacklist(store, list_name, number)
    return BlacklistTest(list=list_name, number=number, blacklisted=entry is not None,
                         entry=BlacklistOut.of(entry) if entry is not None else None)
