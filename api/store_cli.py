"""What the CLI commands that read or write the CDR store share (`sipledger
quality`, `sipledger cdr rebuild`): times from the command line, and the store
opened by the command itself -- or, while `up` holds it (chdb: one process per
data path), the same question asked of the running API with an admin token.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cdr.store.queries import CdrStore
from proxy.infra.cli import fail, usage
from proxy.infra.clickhouse.backend import BackendError, open_backend
from proxy.infra.clickhouse.migrate import MigrationError, migrate


def instant(name: str, value: str | None, *, end: bool = False) -> int | None:
    """``--from`` / ``--to`` as epoch ms (ISO 8601, a day, a month or epoch ms); None stays None."""
    if value is None:
        return None
    try:
        from .params import parse_instant  # FastAPI's import chain: only when a time is given
        return parse_instant(value, end=end)
    except ValueError as exc:
        usage(f"--{name} {value!r}: {exc}")


@contextmanager
def cdr_store(obj, token: str | None, doing: str) -> Iterator[CdrStore | None]:
    """The CDR store (migrated: a store `up` never opened has empty tables), or
    None when `up` holds it and a ``token`` was given: then ask the API.  Any
    other failure is one CLI line; ``doing`` completes "... through the API"."""
    try:
        backend = open_backend(obj.config.clickhouse, obj.data_dir)
    except BackendError as exc:
        message = str(exc).splitlines()[0]
        if "another process" not in message:
            fail(f"CDR store: {message}")
        if not token:
            fail(f"{message}\n  {doing} through the API: --token ADMIN_TOKEN")
        yield None
        return
    try:
        migrate(backend)
        yield CdrStore(backend)
    except (BackendError, MigrationError) as exc:
        fail(str(exc).splitlines()[0])
    finally:
        backend.close()


def through_api(obj, token: str, method: str, path: str, *, timeout: float, **request: Any) -> Any:
    """The running API's answer (JSON) to one admin request; errors as one CLI line."""
    import httpx
    api = f"http://127.0.0.1:{obj.config.api.port}"
    try:
        response = httpx.request(method, f"{api}{path}", timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"}, **request)
    except httpx.HTTPError as exc:
        fail(f"API {api}: {exc}")
    if response.status_code != 200:
        fail(f"API {api}: {response.status_code} {response.text[:300]}")
    return response.json()
