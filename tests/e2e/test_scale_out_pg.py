"""Two `tuneforge serve` processes on one PostgreSQL, as behind a load balancer, each with its own
data directory (two machines) and the bytes in one S3 bucket (a real moto server): a model trained
through one is served by the other; deleted through one, it is gone from the other within 5 s,
its engine and local cache included; and a key's rate limit is one budget across both (Redis on
127.0.0.1:6379)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.helpers import FAST, jsonl, upload, wait_for, watch

pytestmark = pytest.mark.slow


def loaded_fine_tunes(server) -> set[str]:
    """Fine-tuned models in that server's engine (its /metrics gauge)."""
    text = httpx.get(f"{server.root_url}/metrics", timeout=10).text
    prefix = 'tuneforge_inference_fine_tuned_loaded{model="'
    return {line[len(prefix) :].split('"')[0] for line in text.splitlines() if line.startswith(prefix)}


def ask(client, model):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is 1 + 1?"}], max_tokens=4
    )


def test_model_deleted_through_one_server_is_gone_from_the_other_within_5s(
    server_factory, pg_url, s3_blob_url
):
    shared = {"TUNEFORGE_DATABASE_URL": pg_url, "TUNEFORGE_BLOB_URL": s3_blob_url}
    a = server_factory({**shared, **FAST, "TUNEFORGE_WORKERS": "1"})
    b = server_factory({**shared, "TUNEFORGE_WORKERS": "0"})
    key = a.create_key("default")
    ca, cb = a.client(key), b.client(key)
    job = ca.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=upload(ca, jsonl(10)),
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 5}}},
    )
    done = watch(ca, job.id, {"succeeded", "failed", "cancelled"}, timeout=900)
    assert done.status == "succeeded", done.error
    model = done.fine_tuned_model
    ckpt = next(
        k.fine_tuned_model_checkpoint
        for k in cb.fine_tuning.jobs.checkpoints.list(job.id).data
        if k.fine_tuned_model_checkpoint != model
    )

    # B (no worker, its own disk) serves what A's worker trained: from the bucket, via its cache.
    for name in (model, ckpt):
        assert ask(cb, name).model == name
        assert ask(ca, name).model == name
    assert {model, ckpt} <= loaded_fine_tunes(b)
    cached = [p for p in (b.data_dir / "cache" / "models").glob("*/*") if p.is_dir()]
    assert len(cached) == 2

    ca.models.delete(model)
    t0 = time.monotonic()
    with pytest.raises(openai.NotFoundError):  # every request reads the store: 404 at once
        ask(cb, model)
    with pytest.raises(openai.NotFoundError):
        cb.models.retrieve(model)
    # ... and B's engine and cache let it go within seconds (Settings.model_sync_seconds).
    wait_for(lambda: model not in loaded_fine_tunes(b), 5, "B's engine to drop the deleted model")
    wait_for(
        lambda: len([p for p in (b.data_dir / "cache" / "models").glob("*/*") if p.is_dir()]) == 1,
        5,
        "B's local copy of the deleted model to go",
    )
    assert time.monotonic() - t0 < 5
    # The checkpoint was not deleted: both still serve it.
    assert ckpt in loaded_fine_tunes(b) and ask(cb, ckpt).model == ckpt

    # Deleting the checkpoint through B is seen by A the same way.
    cb.models.delete(ckpt)
    with pytest.raises(openai.NotFoundError):
        ask(ca, ckpt)
    wait_for(lambda: ckpt not in loaded_fine_tunes(a), 5, "A's engine to drop the deleted checkpoint")


def test_rate_limit_is_one_budget_across_two_servers(server_factory, pg_url, redis_url):
    env = {
        "TUNEFORGE_DATABASE_URL": pg_url,
        "TUNEFORGE_WORKERS": "0",
        "TUNEFORGE_RATE_LIMIT_RPM": "6",
        "TUNEFORGE_REDIS_URL": redis_url,
    }
    a, b = server_factory(env), server_factory(env)
    key = a.create_key("default")
    clients = [a.client(key), b.client(key)]
    # Six requests, alternating between the servers, use up the key's one budget ...
    for i in range(6):
        clients[i % 2].models.list()
    # ... so the seventh is refused whichever server gets it, with OpenAI's 429.
    for c in clients:
        with pytest.raises(openai.RateLimitError) as info:
            c.models.list()
        assert info.value.code == "rate_limit_exceeded" and info.value.type == "requests"
        assert int(info.value.response.headers["retry-after"]) >= 1
    # Another key has its own budget on both.
    other = a.create_key("default")
    assert a.client(other).models.list() and b.client(other).models.list()
