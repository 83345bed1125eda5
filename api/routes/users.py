"""``/v1/users``: subscribers, the REST twin of `sipledger user` (admin only).

Both call proxy/provisioning/service.py: same rules, same one-line refusals
(``detail``), same store and change log, so a running proxy sees the change
at its next poll.  Passwords are accepted, never returned.
"""
from typing import Annotated, Any

from fastapi import APIRouter, Query

from proxy.provisioning import service

from ..deps import Admin, ProvisioningStoreDep
from ..params import AddressPath, PageParams
from ..schemas_provisioning import Page, User, UserDeleted, UserIn, UserPatch

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=Page[User], summary="Subscribers, by domain and user (never their passwords)")
def list_users(who: Admin, store: ProvisioningStoreDep, paging: PageParams,
               domain: Annotated[str | None, Query(max_length=255, description="only this domain")] = None
               ) -> dict[str, Any]:
    return paging.page(service.list_users(store, domain), User.of)


@router.post("", status_code=201, response_model=User, summary="Add a subscriber (`user add`)")
def add_user(who: Admin, store: ProvisioningStoreDep, body: UserIn) -> User:
    return User.of(service.add_user(store, body.address, body.password, ha1_only=body.ha1_only, ha1=body.ha1))


@router.get("/{address}", response_model=User, summary="One subscriber")
def get_user(who: Admin, store: ProvisioningStoreDep, address: AddressPath) -> User:
    return User.of(service.get_user(store, address))


@router.patch("/{address}", response_model=User, summary="Change a subscriber's password (`user passwd`)")
def set_password(who: Admin, store: ProvisioningStoreDep, address: AddressPath, body: UserPatch) -> User:
    return User.of(service.set_password(store, address, body.password, ha1_only=body.ha1_only))


@router.delete("/{address}", response_model=UserDeleted,
               summary="Delete a subscriber and the aliases pointing at it (`user del`)")
def delete_user(who: Admin, store: ProvisioningStoreDep, address: AddressPath) -> UserDeleted:
    deleted, aliases = service.delete_user(store, address)
    return UserDeleted(address=deleted, aliases_deleted=aliases)
