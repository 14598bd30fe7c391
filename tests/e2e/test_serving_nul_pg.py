"""NUL characters on PostgreSQL (whose text and JSON columns cannot hold them): every string of a
fine-tuning job create and every model name of a serving request that has one is refused with a
400 naming its param, never a 500, and nothing is half-written. A real server on PostgreSQL, the
real openai SDK."""

from __future__ import annotations

import io
import json

import httpx
import openai
import pytest

ROWS = "".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}
    )
    + "\n"
    for i in range(10)
).encode()
WANDB = {"project": "p", "name": "n", "entity": "e", "tags": ["t"]}


def with_nul(where: str, value: str = "x\x00y"):
    """Job-create kwargs with a NUL at `where`, and the param the 400 must name."""
    wandb = lambda **kw: [{"type": "wandb", "wandb": {**WANDB, **kw}}]  # noqa: E731
    return {
        "model": ({"model": "tuneforge-tiny" + value}, "model"),
        "training_file": ({"training_file": "file-" + value}, "training_file"),
        "validation_file": ({"validation_file": "file-" + value}, "validation_file"),
        "suffix": ({"suffix": value}, "suffix"),
        "metadata key": ({"metadata": {value: "v"}}, "metadata"),
        "metadata value": ({"metadata": {"team": value}}, "metadata"),
        "wandb project": ({"integrations": wandb(project=value)}, "integrations"),
        "wandb name": ({"integrations": wandb(name=value)}, "integrations"),
        "wandb entity": ({"integrations": wandb(entity=value)}, "integrations"),
        "wandb tags": ({"integrations": wandb(tags=["ok", value])}, "integrations"),
    }[where]


JOB_FIELDS = [
    "model",
    "training_file",
    "validation_file",
    "suffix",
    "metadata key",
    "metadata value",
    "wandb project",
    "wandb name",
    "wandb entity",
    "wandb tags",
]


def test_nul_in_job_create_and_serving_requests_is_400_on_postgresql(server_factory, pg_url):
    srv = server_factory({"TUNEFORGE_DATABASE_URL": pg_url, "TUNEFORGE_WORKERS": "0"})
    client = srv.client()
    fid = client.files.create(file=("train.jsonl", io.BytesIO(ROWS)), purpose="fine-tune").id
    base = {"model": "tuneforge-tiny", "training_file": fid}
    for where in JOB_FIELDS:
        kw, param = with_nul(where)
        with pytest.raises(openai.BadRequestError) as info:
            client.fine_tuning.jobs.create(**{**base, **kw})
        assert info.value.param == param, where
        assert "NUL" in info.value.message, where
    # Nothing was created by the refused requests; the same request without the NUL works.
    assert list(client.fine_tuning.jobs.list()) == []
    job = client.fine_tuning.jobs.create(
        **base, suffix="ok", metadata={"team": "a"}, integrations=[{"type": "wandb", "wandb": WANDB}]
    )
    assert job.metadata == {"team": "a"} and job.user_provided_suffix == "ok"

    bad = "tuneforge-tiny\x00"
    for call in (
        lambda: client.chat.completions.create(model=bad, messages=[{"role": "user", "content": "hi"}]),
        lambda: client.completions.create(model=bad, prompt="hi"),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            call()
        assert info.value.param == "model"
    for method in ("GET", "DELETE"):  # the model name in the path
        r = httpx.request(
            method,
            f"{srv.base_url}/models/ft:x%00y",
            timeout=30,
            headers={"Authorization": f"Bearer {client.api_key}"},
        )
        assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]
    assert "status=500" not in srv.log()
