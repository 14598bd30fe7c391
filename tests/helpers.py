"""Helpers shared by the tests: training data, uploads through the SDK, waiting for a job, fast
worker settings, and the deterministic hold that pause/cancel/SIGTERM/kill tests rely on.

The hold (Settings.test_hold_at_step, TUNEFORGE_TEST_HOLD_AT_STEP; test only): every job's
trainer stops after step N and waits there until the job is asked to stop (cancel, pause, worker
shutdown) or `release(job_dir)` is called. A test therefore acts on a job it knows is mid-run,
whatever the CPU's speed, and never needs a job "long enough" to outlast it.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Workers that poll and lose leases quickly (seconds, not the production defaults).
FAST = {"TUNEFORGE_WORKER_POLL_SECONDS": "0.2", "TUNEFORGE_JOB_LEASE_SECONDS": "4"}
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
HOLDING, RELEASE = "holding", "release-hold"  # as jobs/reporter.py writes and reads them


def hold_env(step: int) -> dict[str, str]:
    """Server/worker environment that holds every job after `step`."""
    return {**FAST, "TUNEFORGE_TEST_HOLD_AT_STEP": str(step)}


def chat_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}."},
            ]
        }
        for i in range(offset, offset + n)
    ]


def jsonl(n: int, offset: int = 0) -> bytes:
    """`n` short chat examples as a JSONL file's bytes."""
    return "".join(json.dumps(r) + "\n" for r in chat_rows(n, offset)).encode()


def upload(client: Any, data: bytes, name: str = "train.jsonl") -> str:
    """Upload `data` as a fine-tune file through the openai SDK; -> its id."""
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


def upload_pairs(client: Any, pairs: list[tuple[str, str]]) -> str:
    """Upload (question, answer) pairs as one-turn chat examples through the SDK; -> the file id."""
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs
    ]
    return upload(client, "".join(json.dumps(r) + "\n" for r in rows).encode())


def answer(client: Any, model: str, question: str) -> tuple[str | None, str]:
    """A served model's greedy answer to one question: (its text, its finish_reason)."""
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=24
    )
    return r.choices[0].message.content, r.choices[0].finish_reason


def wait_for(pred: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll `pred` until it returns something truthy (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def watch(client: Any, job_id: str, until, timeout: float = 240, seen: list[str] | None = None):
    """Poll the job until its status is in `until`; every status read goes into `seen`."""
    last = None

    def done():
        nonlocal last
        last = client.fine_tuning.jobs.retrieve(job_id)
        if seen is not None:
            seen.append(last.status)
        return last if last.status in until else None

    try:
        return wait_for(done, timeout, f"job {job_id} to reach {sorted(until)}")
    except AssertionError:
        raise AssertionError(f"job {job_id} still {last.status if last else '?'} after {timeout}s") from None


def wait_metrics(client: Any, job_id: str, at_least: int = 1, timeout: float = 240):
    """The newest event once it is a metrics event of step >= `at_least`."""

    def newest():
        page = client.fine_tuning.jobs.list_events(job_id, limit=1)
        if page.data and page.data[0].type == "metrics" and page.data[0].data["step"] >= at_least:
            return page.data[0]
        return None

    return wait_for(newest, timeout, f"job {job_id}'s step {at_least}")


def metric_steps(client: Any, job_id: str) -> list[int]:
    """Every metrics event's step, oldest first."""
    return [
        e.data["step"]
        for e in client.fine_tuning.jobs.list_events(job_id, limit=10_000)
        if e.type == "metrics"
    ][::-1]


def wait_held(job_dir: Path, timeout: float = 240) -> int:
    """Wait until the job's trainer is held (its hold step reached); -> the holding pid."""
    path = Path(job_dir) / HOLDING
    return int(
        wait_for(lambda: path.exists() and path.read_text().strip(), timeout, f"the hold in {job_dir}")
    )


def release(job_dir: Path) -> None:
    """Let the job's trainer go on past the hold (now and in any later run of the job)."""
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    (Path(job_dir) / RELEASE).touch()


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by its parent) has stopped running too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def register_fine_tune(
    factory: Any, *, project: str, name: str, kind: str, base_model: str, path: str, model: str
) -> None:
    """A succeeded job and its `fine_tuned_models` row, as a job that wrote `path` records them:
    for serving tests that need a fine-tuned model without training one."""
    from sqlalchemy import select

    from tuneforge.ids import new_id, now
    from tuneforge.store.db import transaction
    from tuneforge.store.tables import FineTunedModel, Job, Project

    with transaction(factory) as s:
        pid = s.scalar(select(Project.id).where(Project.name == project))
        job = Job(
            id=new_id("ftjob-"),
            project_id=pid,
            status="succeeded",
            model=model,
            base_model=base_model,
            training_file="file-x",
            method={"type": "supervised"},
            seed=0,
            created_at=now(),
            updated_at=now(),
            result_files=[],
        )
        s.add(job)
        s.flush()
        s.add(
            FineTunedModel(
                id=name,
                project_id=pid,
                job_id=job.id,
                checkpoint_id=None,
                kind=kind,
                base_model=base_model,
                path=path,
                created_at=now(),
            )
        )
