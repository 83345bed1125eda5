"""The web panel: a static single-page app (api/panel/static/) served by the API
process at ``/panel/`` (``/`` redirects there).  It calls the ``/v1`` REST API
with a bearer token like any other client, so it has no rules of its own;
docs/panel.md says why it is built this way.

The files are served with a strict Content-Security-Policy: scripts and styles
only from this origin, no inline script, no frames -- the panel builds its
pages with DOM calls (``textContent``), never from HTML strings.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["STATIC", "mount_panel"]

STATIC = Path(__file__).parent / "static"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class PanelFiles(StaticFiles):
    """StaticFiles with the panel's security headers."""

    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def mount_panel(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def to_panel() -> RedirectResponse:
        return RedirectResponse("/panel/")

    app.mount("/panel", PanelFiles(directory=STATIC, html=True), name="panel")
