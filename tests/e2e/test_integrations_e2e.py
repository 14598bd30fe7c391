"""Integrations through a real `tuneforge serve` (with its worker) and the openai SDK: one tiny
training job that logs to an offline W&B run, notifies a webhook (which fails once, then is
retried) and an SMTP mailbox, and is accounted for in usage and cost; and per-key rate limits
whose 429s the SDK's own retry gets through."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.integrations.conftest import (  # noqa: F401  (fixtures used below)
    Mailbox,
    chat_lines,
    receiver,
    smtp_server,
)
from tests.integrations.wandb_records import read_run

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))
WANDB_KEY = "wandb-key-that-must-never-leak-0123456789"
FAST = {
    "TUNEFORGE_WORKER_POLL_SECONDS": "0.2",
    "TUNEFORGE_JOB_LEASE_SECONDS": "4",
    "TUNEFORGE_DELIVERY_POLL_SECONDS": "0.2",
    "TUNEFORGE_DELIVERY_BACKOFF_SECONDS": "1",
}


def cli(server, *args) -> str:
    out = subprocess.run(
        [TUNEFORGE, *args], env=server.env, capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout


def wait(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_job_with_wandb_webhook_email_and_usage(
    server_factory,
    tmp_path,
    receiver,  # noqa: F811
    smtp_server,  # noqa: F811
):
    wandb_dir = tmp_path / "wandb-runs"
    srv = server_factory(
        {
            **FAST,
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(wandb_dir),
            "TUNEFORGE_WANDB_API_KEY": WANDB_KEY,
            "TUNEFORGE_SMTP_HOST": smtp_server.host,
            "TUNEFORGE_SMTP_PORT": str(smtp_server.port),
            "TUNEFORGE_SMTP_FROM": "tuneforge@example.org",
            "TUNEFORGE_PRICES": json.dumps(
                {"default": {"training": 8.0}, "tuneforge-tiny": {"training": 40.0}}
            ),
        }
    )
    secret = (
        cli(srv, "webhooks", "add", "--url", receiver.url, "--project", "default").strip().splitlines()[-1]
    )
    assert secret.startswith("whsec_")
    receiver.statuses = [500]  # the first attempt fails; the retry succeeds
    cli(srv, "projects", "set", "default", "--notify-email", "ml@example.org")

    c = srv.client()
    train = c.files.create(file=("train.jsonl", io.BytesIO(chat_lines(10).encode())), purpose="fine-tune").id
    valid = c.files.create(file=("valid.jsonl", io.BytesIO(chat_lines(10).encode())), purpose="fine-tune").id
    job = c.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=train,
        validation_file=valid,
        seed=3,
        hyperparameters={"n_epochs": 1, "batch_size": 5},
        integrations=[
            {"type": "wandb", "wandb": {"project": "tf-e2e", "name": "tiny-run", "tags": ["e2e", "tiny"]}}
        ],
    )
    done = wait(
        lambda: (
            (j := c.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed", "cancelled") and j
        ),
        timeout=300,
        what="the job",
    )
    assert done.status == "succeeded", done.error
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    assert not [e.message for e in events if e.level == "warn"]  # W&B worked: no warning
    metrics = [e.data for e in events if e.type == "metrics"]

    # --- W&B: the offline run holds the job's config, every step's metrics, the checkpoint
    [run_file] = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    run = read_run(run_file)
    assert run["run"]["project"] == "tf-e2e" and run["run"]["name"] == "tiny-run"
    assert run["run"]["tags"] == ["e2e", "tiny"]
    assert run["config"]["fine_tuning_job_id"] == job.id
    assert run["config"]["hyperparameters"]["n_epochs"] == 1
    history = {}
    for row in run["history"]:
        history.setdefault(row["_step"], {}).update(row)
    assert sorted(history) == [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert history[m["step"]]["train_loss"] == pytest.approx(m["train_loss"])
        assert history[m["step"]]["total_steps"] == 2
    assert history[2]["full_valid_loss"] == pytest.approx(metrics[-1]["full_valid_loss"])
    assert history[2]["checkpoint/step"] == 2 and history[2]["checkpoint/epoch"] == 1
    started = [e for e in events if e.message.startswith("Weights & Biases run")]
    assert len(started) == 1 and "offline run" in started[0].message

    # --- the W&B key is never echoed: not in the job, its events, or any log line
    raw = httpx.get(
        f"{srv.base_url}/fine_tuning/jobs/{job.id}/events?limit=100",
        headers={"Authorization": f"Bearer {c.api_key}"},
    ).text
    assert WANDB_KEY not in raw and WANDB_KEY not in done.model_dump_json()
    assert WANDB_KEY not in srv.log()

    # --- webhook: failed once (500), retried, verified with the SDK
    wait(lambda: len(receiver.requests) >= 2, what="the webhook retry")
    headers, body = receiver.requests[-1]
    event = OpenAI(api_key="x").webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == job.id
    assert receiver.requests[0][0]["webhook-id"] == event.id
    log = cli(srv, "webhooks", "deliveries")
    assert "delivered\t2\tHTTP 200" in log

    # --- e-mail
    wait(lambda: smtp_server.messages, what="the e-mail")
    _, rcpts, msg = smtp_server.messages[0]
    assert rcpts == ["ml@example.org"]
    assert msg["Subject"] == f"[tuneforge] Fine-tuning job {job.id} succeeded"
    assert f"Fine-tuned model: {done.fine_tuned_model}" in msg.get_content()

    # --- cost and usage: estimate at validation, actual from the trained tokens
    extra = done.model_extra or {}
    assert extra["estimated_trained_tokens"] > 0
    assert extra["estimated_cost"] == pytest.approx(extra["estimated_trained_tokens"] * 40 / 1e6)
    assert extra["cost"] == pytest.approx(done.trained_tokens * 40 / 1e6)
    report = httpx.get(
        f"{srv.base_url}/usage",
        params={"group_by": "project_model"},
        headers={"Authorization": f"Bearer {c.api_key}"},
    ).json()
    [bucket] = report["data"]
    assert (bucket["project"], bucket["model"], bucket["jobs"]) == ("default", "tuneforge-tiny", 1)
    assert bucket["trained_tokens"] == done.trained_tokens
    assert bucket["training_cost"] == pytest.approx(extra["cost"])
    printed = json.loads(cli(srv, "usage", "--json", "--by", "project"))
    assert printed["data"][0]["trained_tokens"] == done.trained_tokens

    metrics_text = httpx.get(f"{srv.root_url}/metrics").text
    assert f"tuneforge_trained_tokens_total {float(done.trained_tokens)}" in metrics_text


def test_rate_limit_429_then_sdk_retry_succeeds(server_factory):
    srv = server_factory({"TUNEFORGE_WORKERS": "0", "TUNEFORGE_RATE_LIMIT_RPM": "30"})
    key = srv.create_key("limited")
    strict = srv.client(key)  # max_retries=0
    codes = []
    for _ in range(35):
        try:
            strict.files.list()
            codes.append(200)
        except openai.RateLimitError as exc:
            codes.append(429)
            error = exc
    assert codes.count(200) >= 30 and codes[-1] == 429
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert int(error.response.headers["retry-after"]) >= 1
    # The SDK waits retry-after-ms (here about 2 s) and retries on its own.
    patient = OpenAI(base_url=srv.base_url, api_key=key, max_retries=3, _strict_response_validation=True)
    started = time.monotonic()
    assert patient.files.list().data == []
    assert time.monotonic() - started >= 0.5
