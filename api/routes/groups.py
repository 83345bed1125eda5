"""``/v1/groups``: user groups (members) and the destination prefixes that require
one, the REST twin of `sipledger group` (admin only; proxy/routing/service.py)."""
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from proxy.routing import service
from proxy.routing.permissions import GroupRequirement

from ..deps import Admin, RoutingStoreDep
from ..params import AddressPath, NamePath, PageParams
from ..schemas_provisioning import MemberIn, MemberOut, Page, RequirementIn, RequirementOut

router = APIRouter(prefix="/groups", tags=["groups"])
GroupFilter = Annotated[str | None, Query(max_length=64, description="only this group")]
PrefixPath = Annotated[str, Path(min_length=1, max_length=32, description="destination prefix")]


@router.get("/members", response_model=Page[MemberOut], summary="Group members")
def list_members(who: Admin, store: RoutingStoreDep, paging: PageParams, group: GroupFilter = None) -> dict[str, Any]:
    return paging.page(service.list_group_members(store, group), MemberOut.of)


@router.post("/members", status_code=201, response_model=MemberOut,
             summary="Put a subscriber in a group (`group add`)")
def add_member(who: Admin, store: RoutingStoreDep, body: MemberIn) -> MemberOut:
    return MemberOut.of(service.add_to_group(store, body.address, body.group))


@router.get("/members/{group}/{address}", response_model=MemberOut, summary="One membership")
def get_member(who: Admin, store: RoutingStoreDep, group: NamePath, address: AddressPath) -> MemberOut:
    return MemberOut.of(service.get_group_member(store, address, group))


@router.delete("/members/{group}/{address}", status_code=204, response_class=Response,
               summary="Take a subscriber out of a group (`group del`)")
def delete_member(who: Admin, store: RoutingStoreDep, group: NamePath, address: AddressPath) -> None:
    service.remove_from_group(store, address, group)


@router.get("/requirements", response_model=Page[RequirementOut],
            summary="Destination prefixes and the group each requires")
def list_requirements(who: Admin, store: RoutingStoreDep, paging: PageParams,
                      group: GroupFilter = None) -> dict[str, Any]:
    return paging.page(service.list_group_requirements(store, group), RequirementOut.of)


@router.get("/requirements/{prefix}", response_model=RequirementOut, summary="The group a prefix requires")
def get_requirement(who: Admin, store: RoutingStoreDep, prefix: PrefixPath) -> RequirementOut:
    return RequirementOut.of(service.get_group_requirement(store, prefix))


@router.put("/requirements/{prefix}", response_model=RequirementOut,
            summary="Only members of a group may call this prefix (`group require`)")
def require_group(who: Admin, store: RoutingStoreDep, prefix: PrefixPath, body: RequirementIn) -> RequirementOut:
    previous = service.require_group(store, prefix, body.group)
    return RequirementOut.of(GroupRequirement(prefix, body.group), previous)


@router.delete("/requirements/{prefix}", status_code=204, response_class=Response,
               summary="Drop the group requirement of a prefix (`group unrequire`)")
def unrequire_group(who: Admin, store: RoutingStoreDep, prefix: PrefixPath) -> None:
    service.unrequire_group(store, prefix)
