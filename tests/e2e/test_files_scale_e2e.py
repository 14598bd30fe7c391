"""Uploads stream in constant memory; the same server code works on PostgreSQL."""

from __future__ import annotations

import io
import threading
import time

import httpx
import psutil

MB = 1024 * 1024


def test_large_upload_keeps_server_memory_flat(server, tmp_path):
    size = 160 * MB
    src = tmp_path / "big.jsonl"
    with open(src, "wb") as fh:
        line = b'{"messages": [{"role": "user", "content": "' + b"x" * 1000 + b'"}]}\n'
        for _ in range(size // len(line)):
            fh.write(line)
        size = fh.tell()

    proc = psutil.Process(server.proc.pid)
    baseline = proc.memory_info().rss
    peak, done = baseline, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        key = server.create_key("big")
        with open(src, "rb") as fh:
            r = httpx.post(
                f"{server.base_url}/files",
                headers={"Authorization": f"Bearer {key}"},
                data={"purpose": "fine-tune"},
                files={"file": ("big.jsonl", fh)},
                timeout=300,
            )
    finally:
        done.set()
        sampler.join()
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == size
    growth = (peak - baseline) / MB
    assert growth < 40, f"server RSS grew by {growth:.0f} MB for a {size // MB} MB upload"


def test_files_on_postgresql(server_factory, pg_url):
    srv = server_factory({"TUNEFORGE_DATABASE_URL": pg_url})
    c = srv.client()
    f = c.files.create(file=("t.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    assert [x.id for x in c.files.list(limit=1)] == [f.id]
    assert c.files.content(f.id).read() == b"{}\n"
    assert c.files.delete(f.id).deleted
    srv.stop()  # release its connections before the schema is dropped
