"""The GGUF cache's rules, without de-quantising anything (the conversion is stubbed): keyed by
the file (a changed file builds a new directory), built once even when two builders race, and
never left half-built."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tuneforge import gguf


@pytest.fixture
def builds(monkeypatch):
    """Replace the conversion with a slow stub that writes a config and counts its calls."""
    calls = []

    def fake_convert(src, out):
        calls.append(src)
        time.sleep(0.3)  # long enough for a racing builder to arrive while this one works
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "convert", fake_convert)
    return calls


def test_racing_builders_build_once(tmp_path, builds):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"x")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(gguf.ensure_hf_dir(tmp_path / "models", src)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(set(results)) == 1
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")) == [
        results[0].name
    ]


def test_a_changed_file_gets_a_new_directory(tmp_path, builds):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"x")
    first = gguf.ensure_hf_dir(tmp_path / "models", src)
    src.write_bytes(b"xy")
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = gguf.ensure_hf_dir(tmp_path / "models", src)
    assert first != second and len(builds) == 2 and first.name.startswith("gguf-m-")


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(src, out):
        out.mkdir(parents=True)
        raise RuntimeError("cannot read")

    monkeypatch.setattr(gguf, "convert", broken)
    src = tmp_path / "m.gguf"
    src.write_bytes(b"x")
    with pytest.raises(RuntimeError):
        gguf.ensure_hf_dir(tmp_path / "models", src)
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []
