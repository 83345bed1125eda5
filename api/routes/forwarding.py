"""``/v1/forwarding``: call forwarding per subscriber, the REST twin of `sipledger
forward set|show|clear|list` (admin only; proxy/routing/service.py).

PATCH changes only the keys it is given (null clears one), as `forward set`
changes only the options given."""
from typing import Any

from fastapi import APIRouter, Response

from proxy.routing import service
from proxy.routing.forwarding import Condition
from proxy.routing.store import UNSET

from ..deps import Admin, RoutingStoreDep
from ..params import AddressPath, PageParams
from ..schemas_provisioning import FIELD_CONDITIONS, ForwardingOut, ForwardingPatch, Page

router = APIRouter(prefix="/forwarding", tags=["forwarding"])


@router.get("", response_model=Page[ForwardingOut], summary="Every subscriber with forwarding set")
def list_forwarding(who: Admin, store: RoutingStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_forwarding(store), ForwardingOut.of)


@router.get("/{address}", response_model=ForwardingOut,
            summary="A subscriber's forwarding and where each condition goes (`forward show`)")
def get_forwarding(who: Admin, store: RoutingStoreDep, address: AddressPath) -> ForwardingOut:
    stored, prefs = service.get_forwarding(store, address)
    return ForwardingOut.of(stored, prefs)


@router.patch("/{address}", response_model=ForwardingOut,
              summary="Set forwarding preferences; keys left out are kept (`forward set`)")
def set_forwarding(who: Admin, store: RoutingStoreDep, address: AddressPath, body: ForwardingPatch) -> ForwardingOut:
    given = body.model_fields_set
    targets: dict[Condition | str, str | None] = {
        condition: getattr(body, name) for name, condition in FIELD_CONDITIONS.items() if name in given}
    timeout = body.no_answer_timeout if "no_answer_timeout" in given else UNSET
    stored = service.set_forwarding(store, address, targets, timeout)
    if stored is None:
        return ForwardingOut(address=service.subscriber_address(address))
    return ForwardingOut.of(*service.get_forwarding(store, address))


@router.delete("/{address}", status_code=204, response_class=Response,
               summary="Remove all of a subscriber's forwarding (`forward clear`)")
def clear_forwarding(who: Admin, store: RoutingStoreDep, address: AddressPath) -> None:
    service.clear_forwarding(store, address)
