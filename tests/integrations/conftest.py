"""Fixtures for integration tests: a project, fine-tune files, jobs created through the real
service, a local HTTP receiver for webhooks and a local SMTP server (aiosmtpd).

Built on the shared `settings` / `db` fixtures, so tests taking them run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuneforge.protocol.fine_tuning import CreateFineTuningJobRequest
from tuneforge.services import jobs as jobs_service
from tuneforge.services.files import create_file_from_path
from tuneforge.services.keys import get_or_create_project
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import open_blobs
from tuneforge.store.db import transaction


def chat_lines(n: int, *, extra: dict[int, str] | None = None) -> str:
    """`n` chat examples; `extra` puts a given user text on given (1-based) lines."""
    rows = []
    for i in range(1, n + 1):
        user = (extra or {}).get(i, f"What is {i} plus {i}?")
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": f"It is {2 * i}."},
                ]
            }
        )
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def project(db):
    with transaction(db) as s:
        return get_or_create_project(s, "acme")


@pytest.fixture
def upload(db, settings, project, tmp_path) -> Callable[..., str]:
    blobs = open_blobs(settings)
    counter = iter(range(10**6))

    def make(text: str, project_id: str | None = None) -> str:
        src = tmp_path / f"upload-{next(counter)}.jsonl"
        src.write_text(text)
        with transaction(db) as s:
            return create_file_from_path(
                s, blobs, project_id=project_id or project.id, filename=src.name, purpose="fine-tune", src=src
            ).id

    return make


@pytest.fixture
def create_job(db, settings, project, upload) -> Callable[..., str]:
    def make(text: str | None = None, project_id: str | None = None, **fields) -> str:
        file_id = upload(text or chat_lines(10), project_id=project_id)
        body = {"model": "tuneforge-tiny", "training_file": file_id, **fields}
        with transaction(db) as s:
            return jobs_service.create_job(
                s,
                project_id or project.id,
                CreateFineTuningJobRequest(**body),
                resolver=ModelResolver(settings),
            ).id

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Receiver:
    """A local webhook endpoint: answers `statuses` in turn (then 200) and records every request."""

    url: str
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    rec = Receiver(url=f"http://127.0.0.1:{port}/hooks/tuneforge")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = rec.statuses.pop(0) if rec.statuses else 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list = field(default_factory=list)


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """A real SMTP server on localhost (aiosmtpd) that keeps every message it receives."""
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    box = Mailbox("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            msg = message_from_bytes(envelope.content, policy=policy.default)
            box.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
