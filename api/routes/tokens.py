"""``/v1/tokens``: API tokens, the REST twin of `sipledger token` (admin only).

Both call the token store's ``create`` / ``list`` / ``get`` / ``revoke``
(api/tokens.py): same rules, same messages.  A token is shown once, in the
answer to its POST; a revoked one is refused from the next request on.
"""
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from ..deps import Admin, TokenStoreDep
from ..params import PageParams
from ..schemas_provisioning import Page, TokenCreated, TokenIn, TokenOut

router = APIRouter(prefix="/tokens", tags=["tokens"])
TokenId = Annotated[str, Path(min_length=1, max_length=16, description="the token's public id")]


@router.get("", response_model=Page[TokenOut], summary="API tokens (never the tokens themselves)")
def list_tokens(who: Admin, store: TokenStoreDep, paging: PageParams,
                all_: Annotated[bool, Query(alias="all", description="include revoked tokens")] = False,
                ) -> dict[str, Any]:
    return paging.page(store.list(include_revoked=all_), TokenOut.of)


@router.post("", status_code=201, response_model=TokenCreated,
             summary="Create a token; the answer holds it, once (`token create`)")
def create_token(who: Admin, store: TokenStoreDep, body: TokenIn) -> TokenCreated:
    info, token = store.create(body.role, body.account, body.name)
    return TokenCreated(**TokenOut.of(info).model_dump(), token=token)


@router.get("/{token_id}", response_model=TokenOut, summary="One token")
def get_token(who: Admin, store: TokenStoreDep, token_id: TokenId) -> TokenOut:
    return TokenOut.of(store.get(token_id))


@router.delete("/{token_id}", status_code=204, response_class=Response,
               summary="Revoke a token: refused from the next request on (`token revoke`)")
def revoke_token(who: Admin, store: TokenStoreDep, token_id: TokenId) -> None:
    store.revoke(token_id)
