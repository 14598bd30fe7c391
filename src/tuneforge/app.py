"""The app factory: one Settings in, a FastAPI app out; engine and blob store live in the lifespan.

It sits above both web packages and composes them: the OpenAI API (`api/`: its routers, error
envelope, rate limits, metrics, request context) and the dashboard (`ui/`). Neither imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from tuneforge import ui
from tuneforge.api.errors import install_error_handlers
from tuneforge.api.metrics import install_metrics
from tuneforge.api.middleware import RequestContextMiddleware
from tuneforge.api.ratelimit import install_rate_limits
from tuneforge.api.routes import ROUTERS
from tuneforge.config import Settings
from tuneforge.inference.holder import Serving
from tuneforge.services.expiry import sweep_expired
from tuneforge.services.models import sync_deleted
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import open_blobs
from tuneforge.store.db import make_engine, make_sessionmaker, migrate

log = logging.getLogger("tuneforge.app")


async def _sync_models(app: FastAPI, every: float) -> None:
    """Several API processes: a model deleted through another one leaves this one's engine (and
    local cache) within `every` seconds. A short poll rather than a check per request: each
    request already reads the model's row (a deleted name 404s at once); this only frees memory."""
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(_sync_once, app)
        except Exception:  # housekeeping: retried on the next tick
            log.exception("dropping deleted models failed; will retry")


def _sync_once(app: FastAPI) -> None:
    with app.state.sessionmaker() as session:
        sync_deleted(session, app.state.serving, app.state.resolver)


def create_app(settings: Settings) -> FastAPI:
    settings = settings.resolved()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url)
        try:
            await run_in_threadpool(migrate, engine)
            app.state.engine = engine
            app.state.sessionmaker = make_sessionmaker(engine)
            app.state.blobs = app.state.resolver.blobs
            await run_in_threadpool(app.state.blobs.sweep_tmp)
            # Once here (a deployment with no worker still reclaims space); workers repeat it.
            await run_in_threadpool(sweep_expired, app.state.sessionmaker, app.state.blobs)
            app.state.serving = Serving(settings)  # inference engine: created on first use
            sync = asyncio.create_task(_sync_models(app, settings.model_sync_seconds))
            try:
                yield
            finally:
                sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sync
        finally:
            serving = getattr(app.state, "serving", None)
            if serving is not None:
                await run_in_threadpool(serving.close)
            engine.dispose()

    app = FastAPI(
        title="tuneforge",
        version="0.1.0",
        lifespan=lifespan,
        summary="Self-hosted, OpenAI-compatible fine-tuning service",
    )
    app.state.settings = settings
    # The one answer to "what is model X", and the one blob store (Settings.blob_url) of this app.
    app.state.resolver = ModelResolver(settings, open_blobs(settings))
    install_error_handlers(app)
    install_rate_limits(app, settings)  # per-key 429s (off unless configured)
    install_metrics(app)  # request counts/latencies for GET /metrics
    app.add_middleware(RequestContextMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    ui.install(app)  # the dashboard at /ui (and / redirects there)
    return app
