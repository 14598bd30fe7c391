"""The web dashboard and playground, served at /ui by the API app (`install(app)`).

Server-rendered Jinja2 pages plus a little vanilla JavaScript; charts are Chart.js (vendored in
static/, nothing is loaded from the internet). Pages and their JSON endpoints call the same
services as the OpenAI API, with the project of the signed-in API key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent


def install(app: FastAPI) -> None:
    from tuneforge.ui import api, filters, pages

    templates = Jinja2Templates(directory=HERE / "templates")
    filters.register(templates.env)
    app.state.ui_templates = templates
    app.state.ui_tokenizers = None
    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # pages link the SVG; this answers browsers and tools that ask for the classic path
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")
