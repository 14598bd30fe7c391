"""Jobs API through a real `tuneforge serve` and the strict openai SDK, without training:
create/retrieve/list shapes, each bad parameter a 400 naming its param, project isolation,
cancel before training, and bad files failing in the worker's validation with OpenAI's codes."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

ENV = {"TUNEFORGE_WORKERS": "0"}


def jsonl(n: int, bad_line: str | None = None) -> bytes:
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"hi {i}"},
                    {"role": "assistant", "content": f"hello {i}"},
                ]
            }
        )
        for i in range(n)
    ]
    if bad_line is not None:
        rows.append(bad_line)
    return ("\n".join(rows) + "\n").encode()


def upload(client, data: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


@pytest.fixture(scope="module")
def api(server_factory):
    return server_factory(ENV)


@pytest.fixture(scope="module")
def client(api):
    return api.client()


@pytest.fixture(scope="module")
def train_id(client):
    return upload(client, jsonl(10))


def test_create_retrieve_list_shapes(client, train_id):
    job = client.fine_tuning.jobs.create(
        model="tuneforge-tiny",
        training_file=train_id,
        suffix="shape",
        seed=7,
        metadata={"purpose": "e2e"},
        integrations=[{"type": "wandb", "wandb": {"project": "proj"}}],
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    assert job.id.startswith("ftjob-") and len(job.id) == 30
    assert job.status == "validating_files" and job.object == "fine_tuning.job"
    assert job.seed == 7 and job.metadata == {"purpose": "e2e"} and job.error is None
    assert job.organization_id.startswith("org-") and job.result_files == []
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == "auto"
    assert job.method.type == "supervised"
    assert job.integrations[0].wandb.project == "proj"
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    listed = client.fine_tuning.jobs.list(metadata={"purpose": "e2e"})
    assert [j.id for j in listed.data] == [job.id]
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=1))  # auto-paginates
    assert [e.message for e in events] == [
        f"Validating training file: {train_id}",
        f"Created fine-tuning job: {job.id}",
    ]
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "no-such-model"}, "model"),
        ({"training_file": "file-nope"}, "training_file"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 300}}}},
            "method.supervised.hyperparameters.batch_size",
        ),
        ({"method": {"type": "reinforcement", "reinforcement": {}}}, "method.type"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}},
            "method.dpo.hyperparameters.beta",
        ),
        ({"suffix": "x" * 65}, "suffix"),
        ({"seed": -5}, "seed"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"integrations": [{"type": "wandb", "wandb": {}}]}, "integrations[0].wandb.project"),
    ],
)
def test_bad_parameters_are_400_naming_param(client, train_id, fields, param):
    body = {"model": "tuneforge-tiny", "training_file": train_id, **fields}
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(**body)
    assert info.value.param == param
    assert info.value.type == "invalid_request_error"


def test_unknown_job_is_404_and_other_project_sees_nothing(api, client, train_id):
    job = client.fine_tuning.jobs.create(model="tuneforge-tiny", training_file=train_id)
    other = api.client(api.create_key("someone-else"))
    for call in (
        other.fine_tuning.jobs.retrieve,
        other.fine_tuning.jobs.cancel,
        other.fine_tuning.jobs.list_events,
        other.fine_tuning.jobs.checkpoints.list,
    ):
        with pytest.raises(openai.NotFoundError):
            call(job.id)
    assert other.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.BadRequestError) as info:  # their file is not ours either
        other.fine_tuning.jobs.create(model="tuneforge-tiny", training_file=train_id)
    assert info.value.body["message"] == f"invalid training_file: {train_id}"


def test_cancel_before_training_then_cancel_again_is_400(client, train_id):
    job = client.fine_tuning.jobs.create(model="tuneforge-tiny", training_file=train_id)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)


def wait_for(client, job_id, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")


def test_bad_files_fail_in_validation_with_openai_codes(server_factory):
    srv = server_factory({"TUNEFORGE_WORKERS": "1", "TUNEFORGE_WORKER_POLL_SECONDS": "0.2"})
    c = srv.client()
    few = c.fine_tuning.jobs.create(model="tuneforge-tiny", training_file=upload(c, jsonl(7)))
    broken = c.fine_tuning.jobs.create(
        model="tuneforge-tiny", training_file=upload(c, jsonl(10, bad_line="{not json"))
    )
    job = wait_for(c, few.id, {"failed"})
    assert job.error.code == "invalid_n_examples" and job.error.param == "training_file"
    assert job.error.message == ("Training file has 7 example(s), but must have at least 10 examples")
    job = wait_for(c, broken.id, {"failed"})
    assert job.error.code == "invalid_training_file" and "Line 11" in job.error.message
    newest = c.fine_tuning.jobs.list_events(broken.id, limit=1).data[0]
    assert (newest.level, newest.message) == ("error", job.error.message)
