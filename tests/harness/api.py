"""The REST API in process, over real stores: chdb, SQLite tokens and, for the
billing routes, the billing database -- the very app ``python -m api.serve``
serves (``api.main.create_app`` over an ``AppState``), behind a TestClient.

``open_api(data, database=..., billing=...)`` is a context manager yielding an
``ApiEnv``: the client, tokens by name (``admin``, ``alice``, ``bob`` and a
``revoked`` admin), the ``AppState`` and the chdb backend.  chdb serves one
path per process, so tests share one path and take a database each.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.calls import LiveCalls
from api.main import create_app
from api.routes import ROUTERS, api_router
from api.state import AppState
from api.tokens import TokenStore, open_store
from cdr.store.queries import CdrStore
from proxy.infra.clickhouse.backend import ChdbBackend
from proxy.infra.clickhouse.migrate import migrate
from proxy.infra.config import Config

ALICE, BOB, CAROL = "alice@a.test", "bob@b.test", "carol@c.test"


@dataclass
class ApiEnv:
    client: TestClient
    tokens: dict[str, str]
    state: AppState
    backend: ChdbBackend
    data: Path
    token_store: TokenStore
    calls: dict[str, Any] = field(default_factory=dict)      # sample calls by name, when loaded

    def call(self, method: str, path: str, who: str | None = "admin", **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if who:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, who: str | None = "admin", **params) -> httpx.Response:
        return self.call("GET", path, who, params=params)


def v1_routes() -> list[tuple[str, str]]:
    """(method, path) of every /v1 route, from the routers themselves (not from /openapi.json)."""
    return sorted((method, f"{api_router.prefix}{route.path_format}") for router in ROUTERS for route in router.routes
                  if isinstance(route, APIRoute) for method in route.methods)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def loc_fields(response: httpx.Response) -> set[str]:
    """The parameters a 422 names (``detail[].loc``'s last name)."""
    assert response.status_code == 422, response.text
    return {str(error["loc"][-1]) if not isinstance(error["loc"][-1], int) else str(error["loc"][-2])
            for error in response.json()["detail"]}


@contextlib.contextmanager
def open_api(data: Path, chdb_path: Path, *, database: str, billing: bool) -> Iterator[ApiEnv]:
    """An API over a fresh chdb ``database`` (under ``chdb_path``) and token store
    (under ``data``); ``billing``: with the billing routes' stores too."""
    backend = ChdbBackend(chdb_path, database=database)
    tokens = state = None
    try:
        migrate(backend)
        tokens = open_store(data)
        made = {"admin": tokens.create("admin")[1], "alice": tokens.create("account", ALICE)[1],
                "bob": tokens.create("account", BOB)[1], "carol": tokens.create("account", CAROL)[1]}
        revoked, made["revoked"] = tokens.create("admin", name="old")
        tokens.revoke(revoked.id)
        store = CdrStore(backend)
        state = (AppState.open(store, tokens, Config(), data) if billing
                 else AppState(cdr_store=store, token_store=tokens, live_calls=LiveCalls(data, Config())))
        with TestClient(create_app(state)) as client:
            yield ApiEnv(client, made, state, backend, data, tokens)
    finally:
        if state is not None:
            state.close()
        if tokens is not None:
            tokens.close()
        backend.close()
