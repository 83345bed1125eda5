"""``/v1/media-servers``: named media destinations (voicemail, announcements) that
forwarding may target, the REST twin of `sipledger forward media` (admin only;
proxy/routing/service.py).  The media relays (rtpengine) are configuration
(``[media]`` in sipledger.toml), not provisioning."""
from typing import Any

from fastapi import APIRouter, Response

from proxy.routing import service

from ..deps import Admin, RoutingStoreDep
from ..params import NamePath, PageParams
from ..schemas_provisioning import MediaServerIn, MediaServerOut, Page

router = APIRouter(prefix="/media-servers", tags=["media servers"])


@router.get("", response_model=Page[MediaServerOut], summary="Media servers (forwarding destinations)")
def list_media(who: Admin, store: RoutingStoreDep, paging: PageParams) -> dict[str, Any]:
    return paging.page(service.list_media(store), MediaServerOut.of)


@router.post("", status_code=201, response_model=MediaServerOut,
             summary="Name a media server, e.g. voicemail (`forward media add`)")
def add_media(who: Admin, store: RoutingStoreDep, body: MediaServerIn) -> MediaServerOut:
    return MediaServerOut.of(service.add_media(store, body.name, body.uri))


@router.get("/{name}", response_model=MediaServerOut, summary="One media server")
def get_media(who: Admin, store: RoutingStoreDep, name: NamePath) -> MediaServerOut:
    return MediaServerOut.of(service.get_media(store, name))


@router.delete("/{name}", status_code=204, response_class=Response,
               summary="Delete a media server; refused while forwarding targets it (`forward media del`)")
def delete_media(who: Admin, store: RoutingStoreDep, name: NamePath) -> None:
    service.delete_media(store, name)
