"""The vLLM engine's control plane without vLLM itself (fast; tests/e2e/test_vllm_serving.py runs
the real server): which engine a model name gets, and a server that is not up is a 503 with
Retry-After at once, and is stopped with the app; full fine-tunes' own servers are bounded (LRU)
and stopped when deleted."""

from __future__ import annotations

import os
import sys
import time

import pytest
from fastapi.testclient import TestClient

from tuneforge.config import Settings
from tuneforge.services.resolver import ModelResolver


def _settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", **kw).resolved()


def test_engine_per_base_model_globally_per_name_and_for_an_operators_url(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    bases = {"a": str(a), "b": str(b), "a-too": str(a)}

    r = ModelResolver(_settings(tmp_path, base_models=bases, model_engines={"a": "vllm"}))
    cat = r.catalog(None)
    assert r.target(None, "p", "a").engine == "vllm"  # type: ignore[arg-type]
    assert r.target(None, "p", "b").engine == "builtin"  # type: ignore[arg-type]
    assert r.target(None, "p", "a-too").engine == "builtin"  # type: ignore[arg-type]
    # A LoRA fine-tune goes where a base model named for an engine with its source goes.
    assert r._engine(cat, (), str(a)) == ("vllm", None)
    assert r._engine(cat, (), str(b)) == ("builtin", None)

    r = ModelResolver(_settings(tmp_path, base_models=bases, engine="vllm", model_engines={"b": "builtin"}))
    assert r.target(None, "p", "a").engine == "vllm"  # type: ignore[arg-type]
    assert r.target(None, "p", "b").engine == "builtin"  # type: ignore[arg-type]
    assert r._engine(r.catalog(None), (), str(b)) == ("builtin", None)

    r = ModelResolver(_settings(tmp_path, base_models=bases, vllm_urls={"b": "http://127.0.0.1:9/"}))
    t = r.target(None, "p", "b")  # type: ignore[arg-type]
    assert (t.engine, t.vllm_url) == ("vllm", "http://127.0.0.1:9/")


def test_a_vllm_server_that_is_not_up_is_a_503_with_retry_after_and_stops_with_the_app(tmp_path):
    # A "vLLM" that never becomes healthy: the request must not wait for it.
    never = f"{sys.executable} -c 'import time; time.sleep(600)'"
    model = tmp_path / "model"  # never loaded: the 503 comes before any tokenizing
    model.mkdir()
    settings = _settings(
        tmp_path,
        base_models={"m": str(model)},
        model_engines={"m": "vllm"},
        vllm_command=never,
        vllm_retry_after_seconds=7,
        workers=0,
    )
    from tuneforge.app import create_app
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import transaction

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with transaction(client.app.state.sessionmaker) as session:  # type: ignore[attr-defined]
            _, secret = create_key(session, "default")
        t = time.monotonic()
        r = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        )
        assert time.monotonic() - t < 10  # at once, never the start timeout
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "7"
        err = r.json()["error"]
        assert err["code"] == "engine_unavailable" and err["type"] == "server_error"
        assert "`m`" in err["message"]
        vllm = client.app.state.serving.started_vllm()  # type: ignore[attr-defined]
        (server,) = vllm.servers().values()
        deadline = time.monotonic() + 30
        while server.pid is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pid = server.pid
        assert server.command(1234)[-2:] == ["--dtype", "auto"]
    # The app's shutdown stopped the process it started.
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running after shutdown"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie has exited
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:  # reaped meanwhile
        return False


def test_full_fine_tunes_get_servers_of_their_own_at_most_n_lru_stopped_when_deleted(tmp_path):
    # "vLLM" processes that never become healthy: what is checked is which ones run.
    from tuneforge.errors import Unavailable
    from tuneforge.inference.types import ModelTarget
    from tuneforge.inference.vllm_engine import VllmEngine

    never = f"{sys.executable} -c 'import time; time.sleep(600)'"
    engine = VllmEngine(_settings(tmp_path, vllm_command=never, vllm_max_full_servers=2))
    targets = [
        ModelTarget(
            f"ft:m:p:full{i}:x",
            str(tmp_path / f"full{i}"),
            str(tmp_path / f"full{i}"),
            None,
            "vllm",
            None,
            True,
        )
        for i in range(4)
    ]
    try:
        pids = []
        for t in targets[:2]:
            srv = engine.server(t)
            srv.start()
            pids.append(_wait_pid(srv))
        engine.server(targets[0])  # used again: targets[1] is now the least recently used
        engine.server(targets[2]).start()  # a third: the LRU one is stopped
        assert list(engine.own_servers().values()) == [targets[0].name, targets[2].name]
        _wait_gone(pids[1])
        assert _alive(pids[0])

        busy = engine.server(targets[0])
        busy.active = 1  # answering a request: never stopped for room
        engine.server(targets[2]).active = 1
        with pytest.raises(Unavailable):
            engine.server(targets[3])
        assert _alive(pids[0])
        busy.active = 0

        engine.drop(targets[0].name)  # deleted: its server stops with it
        assert not _alive(pids[0])
        assert list(engine.own_servers().values()) == [targets[2].name]
        assert [s.server for s in engine.stats()] == [targets[2].name]
    finally:
        engine.close()


def _wait_pid(srv) -> int:
    deadline = time.monotonic() + 30
    while srv.pid is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return srv.pid


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running"
        time.sleep(0.1)


def test_a_full_fine_tune_of_a_vllm_base_gets_its_own_server_or_the_builtin_engine(tmp_path):
    from sqlalchemy import select

    from tests.helpers import register_fine_tune
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import make_engine, make_sessionmaker, migrate, transaction
    from tuneforge.store.tables import Project

    base, full, lora = tmp_path / "base", tmp_path / "full", tmp_path / "lora"
    for d in (base, full, lora):
        d.mkdir()
    db = make_engine(f"sqlite:///{tmp_path / 'tuneforge.db'}")
    migrate(db)
    factory = make_sessionmaker(db)
    with transaction(factory) as s:
        create_key(s, "default")
        pid = s.scalar(select(Project.id).where(Project.name == "default"))
    for name, kind, path in (("ft:m:full", "full", full), ("ft:m:lora", "lora", lora)):
        register_fine_tune(
            factory, project="default", name=name, kind=kind, base_model=str(base), path=str(path), model="m"
        )
    try:
        with factory() as s:
            bases = {"m": str(base)}
            own = ModelResolver(_settings(tmp_path, base_models=bases, model_engines={"m": "vllm"}))
            t = own.target(s, pid, "ft:m:full")
            assert (t.engine, t.own_server, t.base_source, t.adapter_path) == ("vllm", True, str(full), None)
            t = own.target(s, pid, "ft:m:lora")  # an adapter still goes into the base's server
            assert (t.engine, t.own_server, t.base_source) == ("vllm", False, str(base))

            builtin = ModelResolver(
                _settings(tmp_path, base_models=bases, model_engines={"m": "vllm"}, vllm_full="builtin")
            )
            t = builtin.target(s, pid, "ft:m:full")
            assert (t.engine, t.own_server, t.base_source) == ("builtin", False, str(full))
            t = ModelResolver(_settings(tmp_path, base_models=bases)).target(s, pid, "ft:m:full")
            assert (t.engine, t.own_server) == ("builtin", False)  # a built-in base: as before
    finally:
        db.dispose()
