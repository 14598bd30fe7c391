"""Server-rendered dashboard pages: parse -> services / ui.views -> template.

Pages need a signed-in session; without one they redirect to the sign-in page. A domain error
(e.g. another project's job: 404) renders an error page with the same message the API gives.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute

from tuneforge.api.deps import Blobs, DbSession, Resolver
from tuneforge.api.routes.files import download
from tuneforge.errors import AuthenticationFailed, TuneforgeError
from tuneforge.services import files as files_service
from tuneforge.services import jobs as jobs_service
from tuneforge.ui import auth, ratings, views
from tuneforge.ui.auth import UiUser


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return request.app.state.ui_templates.TemplateResponse(request, name, context, status_code=status)


class HtmlRoute(APIRoute):
    """Errors on a page become a page: sign-in redirect for 401, an explained error otherwise."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthenticationFailed:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)
            except TuneforgeError as exc:
                return render(request, "error.html", {"error": exc, "user": None}, exc.status)

        return wrapped


router = APIRouter(prefix="/ui", route_class=HtmlRoute, include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only local dashboard paths: never an open redirect.
    return target if target and target.startswith("/ui/") and not target.startswith("//") else "/ui/jobs"


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", {"next": _safe_next(next), "error": None, "user": None})


@router.post("/login")
def login(
    request: Request,
    session: DbSession,
    api_key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/ui/jobs",
) -> Response:
    try:
        token, _ = auth.sign_in(session, api_key)
    except AuthenticationFailed as exc:
        return render(
            request, "login.html", {"next": _safe_next(next), "error": exc.message, "user": None}, 401
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    auth.set_cookie(request, response, token)
    return response


@router.post("/logout")
def logout(request: Request, session: DbSession) -> RedirectResponse:
    auth.sign_out(session, request.cookies.get(auth.COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    auth.clear_cookie(response)
    return response


@router.get("/jobs")
def jobs_page(request: Request, user: UiUser, session: DbSession, status: str | None = None) -> HTMLResponse:
    status = status if status in views.STATUSES else None
    rows = views.list_jobs(session, user, status=status)
    return render(
        request,
        "jobs.html",
        {"user": user, "rows": rows, "status": status, "statuses": views.STATUSES, "nav": "jobs"},
    )


@router.get("/jobs/new")
def new_job_page(
    request: Request,
    user: UiUser,
    session: DbSession,
    resolver: Resolver,
    rerun: str | None = None,
    training_file: str | None = None,
    method: str | None = None,
    model: str | None = None,
) -> HTMLResponse:
    prefill = None
    if rerun:
        prefill = views.rerun_config(jobs_service.get_job(session, user.project_id, rerun))
    elif training_file:  # e.g. the playground's "Train DPO on these ratings" (method=dpo, model)
        prefill = {"training_file": training_file, "method": method, "model": model}
    files = files_service.list_files(session, user.project_id, purpose="fine-tune", limit=500).items
    models = [
        m
        for m in views.chat_models(session, user, resolver.catalog(session).names())
        if m.kind != "checkpoint"
    ]
    return render(
        request,
        "new_job.html",
        {
            "user": user,
            "nav": "new",
            "files": files,
            "models": models,
            "prefill": prefill,
            "rerun": rerun,
            "default_model": views.default_model(models),
            "methods": views.METHODS,
            "hyperparameters": views.hyperparameter_fields(),
        },
    )


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, user: UiUser, session: DbSession) -> HTMLResponse:
    job = jobs_service.get_job(session, user.project_id, job_id)
    wire = jobs_service.job_to_wire(job, user.organization_id)
    return render(
        request, "job.html", {"user": user, "nav": "jobs", "job": wire, "requested": views.rerun_config(job)}
    )


@router.get("/files")
def files_page(
    request: Request, user: UiUser, session: DbSession, purpose: str | None = None
) -> HTMLResponse:
    purpose = purpose if purpose in files_service.ALL_PURPOSES else None
    files = files_service.list_files(session, user.project_id, purpose=purpose, limit=500).items
    return render(
        request,
        "files.html",
        {
            "user": user,
            "nav": "files",
            "files": files,
            "purpose": purpose,
            "purposes": files_service.ALL_PURPOSES,
        },
    )


@router.get("/files/{file_id}")
def file_page(
    request: Request, file_id: str, user: UiUser, session: DbSession, blobs: Blobs, resolver: Resolver
) -> HTMLResponse:
    row = files_service.get_file(session, user.project_id, file_id)
    lines = views.preview(blobs.iter_chunks(row.blob_key))
    models = [views.ChatModel(name, "base") for name in resolver.catalog(session).names()]
    return render(
        request,
        "file.html",
        {
            "user": user,
            "nav": "files",
            "file": row,
            "lines": lines,
            "models": models,
            "default_model": views.default_model(models),
        },
    )


@router.get("/files/{file_id}/download")
def file_download(file_id: str, user: UiUser, session: DbSession, blobs: Blobs) -> StreamingResponse:
    return download(blobs, files_service.get_file(session, user.project_id, file_id))


@router.get("/playground")
def playground_page(
    request: Request, user: UiUser, session: DbSession, resolver: Resolver, models: str | None = None
) -> HTMLResponse:
    available = views.chat_models(session, user, resolver.catalog(session).names())
    chosen = [m for m in (models or "").split(",") if m][:4]
    return render(
        request,
        "playground.html",
        {
            "user": user,
            "nav": "playground",
            "models": available,
            "chosen": chosen,
            "rated": ratings.count(session, user.project_id),
            # the one-click DPO job's settings (all `auto` unless filled in)
            "dpo_hyperparameters": [
                f for f in views.hyperparameter_fields() if "dpo" in f["methods"].split()
            ],
        },
    )
