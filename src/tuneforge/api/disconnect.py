"""Cancel a non-streamed request's work when its client goes away; stream the other kind.

A streamed response notices a gone client when a write fails and its generator is closed; a plain
`await service.complete(...)` would run to the end (minutes of generation for nobody). Here the
work runs as a task beside a watcher of the ASGI receive channel: on `http.disconnect` the task is
cancelled, which closes the engine's generators and so frees their sequences at the next step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

T = TypeVar("T")

# nginx's "client closed request": never seen by the client, only in our access log and metrics.
CLIENT_CLOSED = 499


async def _disconnected(request: Request) -> None:
    # The body was read already, so the next message is http.disconnect (uvicorn sends it when the
    # peer closes the connection).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T | Response:
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (shutdown): take the work down with it
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})  # let it unwind (generators closed, sequences cancelled)
    if not task.cancelled():
        task.exception()  # mark a late failure as seen: the client it was for is gone
    return Response(status_code=CLIENT_CLOSED)


def event_stream(lines: AsyncIterator[str]) -> StreamingResponse:
    """A streamed (`stream: true`) answer: server-sent events, never cached."""
    return StreamingResponse(lines, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
