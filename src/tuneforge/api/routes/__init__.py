"""Every router the app mounts. Each router carries its own prefix: `/v1` for the OpenAI API
(`APIRouter(prefix="/v1")`), none for operator endpoints such as `/health`. Append yours here."""

from __future__ import annotations

from tuneforge.api import metrics
from tuneforge.api.routes import chat, completions, files, health, jobs, models, permissions, uploads, usage

ROUTERS = [
    health.router,
    files.router,
    uploads.router,
    jobs.router,
    usage.router,
    metrics.router,
    models.router,
    chat.router,
    completions.router,
    permissions.router,
]
