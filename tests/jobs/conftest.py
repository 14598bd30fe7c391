"""Fixtures for jobs unit tests: a project, fine-tune files in the blob store, job factories.

Built on the shared `settings` / `db` fixtures, so every test here runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json

import pytest

from tuneforge.protocol.fine_tuning import CreateFineTuningJobRequest
from tuneforge.services import jobs as service
from tuneforge.services.files import create_file_from_path
from tuneforge.services.keys import get_or_create_project
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.blobs import BlobStore, open_blobs
from tuneforge.store.db import transaction


def chat_lines(n: int) -> str:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": str(2 * i)},
            ]
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def blobs(settings) -> BlobStore:
    return open_blobs(settings)


@pytest.fixture
def project(db):
    with transaction(db) as s:
        return get_or_create_project(s, "Acme Research")


@pytest.fixture
def upload(db, blobs, project, tmp_path):
    """upload(text, purpose="fine-tune", project_id=None) -> file id."""
    counter = iter(range(10**6))

    def make(text: str, purpose: str = "fine-tune", project_id: str | None = None) -> str:
        src = tmp_path / f"upload-{next(counter)}.jsonl"
        src.write_text(text)
        with transaction(db) as s:
            row = create_file_from_path(
                s, blobs, project_id=project_id or project.id, filename=src.name, purpose=purpose, src=src
            )
            return row.id

    return make


@pytest.fixture
def training_file(upload) -> str:
    return upload(chat_lines(12))


@pytest.fixture
def create(db, settings, project, training_file):
    """create(**fields) -> job id, through the real service (validation included)."""

    def make(**fields) -> str:
        body = {"model": "tuneforge-tiny", "training_file": training_file, **fields}
        with transaction(db) as s:
            return service.create_job(
                s, project.id, CreateFineTuningJobRequest(**body), resolver=ModelResolver(settings)
            ).id

    return make
