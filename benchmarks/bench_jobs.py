"""Jobs control-plane benchmark (not a test): `make bench-jobs`.

1. create → running latency with the default settings (one worker, 1 s poll): a real server,
   real workers, tuneforge-tiny; also create → first metrics event (model loaded, first step).
2. Listing a job with 10 000 events (+ 3 checkpoints): p50/p99 of the first events page (limit
   20), a page deep in the history (`after` = the 5 000th event), walking all 10 000 with
   limit=100, and the checkpoints list; on SQLite and PostgreSQL.

Prints a Markdown block to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from conftest import start_server  # noqa: E402  (the e2e server fixture's starter)

PG = os.environ.get("TUNEFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def jsonl(n: int) -> bytes:
    rows = [
        json.dumps(
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        )
        for i in range(n)
    ]
    return ("\n".join(rows) + "\n").encode()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_latency(runs: int = 3) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(Path(tmp), {"TUNEFORGE_WORKERS": "1"})
        try:
            c = srv.client()
            fid = c.files.create(file=("t.jsonl", io.BytesIO(jsonl(10))), purpose="fine-tune").id
            to_running, to_metrics = [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                job = c.fine_tuning.jobs.create(
                    model="tuneforge-tiny",
                    training_file=fid,
                    method={
                        "type": "supervised",
                        "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 10}},
                    },
                )
                running = None
                while True:
                    j = c.fine_tuning.jobs.retrieve(job.id)
                    if running is None and j.status in ("running", "succeeded"):
                        running = time.perf_counter() - t0
                    ev = c.fine_tuning.jobs.list_events(job.id, limit=1).data
                    if (ev and ev[0].type == "metrics") or j.status in ("succeeded", "failed"):
                        to_metrics.append(time.perf_counter() - t0)
                        break
                    time.sleep(0.02)
                to_running.append(running)
                while c.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed"):
                    time.sleep(0.1)
        finally:
            srv.stop()
    return [
        f"| create → running (default 1 s poll) | {statistics.median(to_running):.2f} s "
        f"(min {min(to_running):.2f}, max {max(to_running):.2f}, n={runs}) |",
        f"| create → first metrics event | {statistics.median(to_metrics):.2f} s "
        f"(min {min(to_metrics):.2f}, max {max(to_metrics):.2f}) |",
    ]


def seed_events(db_url: str, n: int = 10_000) -> tuple[str, str]:
    """A job with `n` metrics events and 3 checkpoints, inserted straight into the store."""
    from tuneforge.ids import new_id, now
    from tuneforge.services.keys import create_key
    from tuneforge.store.db import make_engine, make_sessionmaker, migrate, transaction
    from tuneforge.store.tables import Job, JobCheckpoint, JobEvent

    engine = make_engine(db_url)
    migrate(engine)
    with transaction(make_sessionmaker(engine)) as s:
        key, secret = create_key(s, "bench")
        ts = now()
        job = Job(
            id=new_id("ftjob-"),
            project_id=key.project_id,
            status="succeeded",
            model="tuneforge-tiny",
            base_model="tuneforge-tiny",
            training_file="file-x",
            method={
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.0}
                },
            },
            seed=1,
            result_files=[],
            created_at=ts,
            updated_at=ts,
            attempts=0,
        )
        s.add(job)
        s.flush()
        s.add_all(
            JobEvent(
                id=new_id("ftevent-"),
                job_id=job.id,
                created_at=ts,
                level="info",
                type="metrics",
                message=f"Step {i}/{n}: training loss=1.00",
                data={"step": i, "total_steps": n, "train_loss": 1.0, "train_mean_token_accuracy": 0.5},
            )
            for i in range(1, n + 1)
        )
        s.add_all(
            JobCheckpoint(
                id=new_id("ftckpt_"),
                job_id=job.id,
                created_at=ts,
                step_number=k,
                fine_tuned_model_checkpoint=f"ft:x:y::z:ckpt-step-{k}",
                metrics={"step": float(k)},
            )
            for k in (n // 3, 2 * n // 3, n)
        )
    engine.dispose()
    return job.id, secret


def bench_listing(label: str, env: dict[str, str], db_url: str, reps: int = 50) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(Path(tmp), {"TUNEFORGE_WORKERS": "0", **env})
        try:
            job_id, key = seed_events(db_url)
            h = {"Authorization": f"Bearer {key}"}
            base = f"{srv.base_url}/fine_tuning/jobs/{job_id}"
            with httpx.Client(headers=h, timeout=60) as http:
                mid = http.get(f"{base}/events", params={"limit": 5000}).json()["data"][-1]["id"]

                def timed(url, params):
                    xs = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        r = http.get(url, params=params)
                        xs.append((time.perf_counter() - t0) * 1000)
                        assert r.status_code == 200, r.text
                    return f"p50 {pct(xs, 50):.1f} ms, p99 {pct(xs, 99):.1f} ms"

                first = timed(f"{base}/events", {"limit": 20})
                deep = timed(f"{base}/events", {"limit": 20, "after": mid})
                ckpts = timed(f"{base}/checkpoints", {})
                t0 = time.perf_counter()
                after, count = None, 0
                while True:
                    params = {"limit": 100, **({"after": after} if after else {})}
                    page = http.get(f"{base}/events", params=params).json()
                    count += len(page["data"])
                    if not page["has_more"]:
                        break
                    after = page["data"][-1]["id"]
                walk = time.perf_counter() - t0
                assert count == 10_000
        finally:
            srv.stop()
    return [
        f"| {label}: events first page (limit 20) | {first} |",
        f"| {label}: events page after the 5 000th event | {deep} |",
        f"| {label}: all 10 000 events, limit=100 (100 requests) | {walk:.2f} s |",
        f"| {label}: checkpoints list | {ckpts} |",
    ]


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    rows = bench_latency()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/tuneforge.db"
        rows += bench_listing("SQLite", {"TUNEFORGE_DATABASE_URL": url}, url)
    import secrets

    from sqlalchemy import create_engine, text

    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = f"{PG}?options=-csearch_path%3D{schema}"
        rows += bench_listing("PostgreSQL", {"TUNEFORGE_DATABASE_URL": url}, url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    print(f"\nHardware: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; commit {commit}\n")
    print("| measurement | result |\n|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
