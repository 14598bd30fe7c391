"""More jobs paths through a real `tuneforge serve` (with its worker) and the openai SDK:

- continuing training from an `ft:` model of the same project starts from its adapter and keeps
  the original base; another project's `ft:` model is a 400 naming `model`;
- `estimated_finish` is a future integer while the job runs, null once it finished;
- step_metrics.csv is plain CSV by default and base64-encoded CSV (OpenAI's quirk) with
  TUNEFORGE_RESULT_FILES_BASE64=true.
"""

from __future__ import annotations

import base64
import csv
import io
import time

import openai
import pytest
from sqlalchemy import select

from tests.helpers import FAST, FINISHED, jsonl, upload, watch
from tuneforge.store.db import make_engine, make_sessionmaker
from tuneforge.store.tables import FineTunedModel

pytestmark = pytest.mark.slow


def ft_rows(server):
    engine = make_engine(f"sqlite:///{server.data_dir / 'tuneforge.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            return {r.id: r for r in s.scalars(select(FineTunedModel))}
    finally:
        engine.dispose()


HEADER = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]


def create(c, model, training_file, *, epochs, batch_size, seed=7, lr=None):
    hp = {"n_epochs": epochs, "batch_size": batch_size}
    if lr is not None:
        hp["learning_rate_multiplier"] = lr
    return c.fine_tuning.jobs.create(
        model=model,
        training_file=training_file,
        seed=seed,
        method={"type": "supervised", "supervised": {"hyperparameters": hp}},
    )


def metrics(c, job_id):
    return [e.data for e in c.fine_tuning.jobs.list_events(job_id, limit=1000) if e.type == "metrics"][::-1]


def watch_with_eta(c, job_id, timeout=240):
    """Poll to the end; collect (status, estimated_finish, time the read was sent) of every read."""
    reads = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # taken before the request: the server's estimate is later than the moment it answered,
        # which a time taken after the answer arrived may already have passed (a flaky failure)
        sent = time.time()
        job = c.fine_tuning.jobs.retrieve(job_id)
        reads.append((job.status, job.estimated_finish, sent))
        if job.status in FINISHED:
            return job, reads
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory(FAST)


def test_continue_training_from_own_ft_model_and_eta(srv):
    c = srv.client()
    train = upload(c, jsonl(10))
    first = create(c, "tuneforge-tiny", train, epochs=6, batch_size=2)  # 30 steps
    done1, reads = watch_with_eta(c, first.id)
    assert done1.status == "succeeded", done1.error

    # estimated_finish: an integer in the future on every read while running (once estimated),
    # and null when finished
    running = [(eta, at) for status, eta, at in reads if status == "running"]
    estimated = [(eta, at) for eta, at in running if eta is not None]
    assert estimated, running
    for eta, at in estimated:
        assert isinstance(eta, int) and eta > at, (eta, at)
    assert done1.estimated_finish is None and reads[-1][1] is None

    # default result file: plain CSV
    content = c.files.content(done1.result_files[0]).text
    assert list(csv.reader(io.StringIO(content)))[0] == HEADER

    # continue from the ft: model, same data and seed
    second = create(c, done1.fine_tuned_model, train, epochs=1, batch_size=2)
    assert second.model == done1.fine_tuned_model
    done2 = watch(c, second.id, FINISHED)
    assert done2.status == "succeeded", done2.error
    assert done2.fine_tuned_model.startswith("ft:tuneforge-tiny:default::")
    assert done2.fine_tuned_model != done1.fine_tuned_model
    rows = ft_rows(srv)
    assert rows[done2.fine_tuned_model].base_model == rows[done1.fine_tuned_model].base_model
    assert rows[done2.fine_tuned_model].kind == "lora"

    # it trained from the first job's adapter: its first loss is far below the first job's
    # first loss on the same data (a fresh adapter would start where the first job started)
    m1, m2 = metrics(c, first.id), metrics(c, second.id)
    assert m1[0]["step"] == 1 and m2[0]["step"] == 1
    assert m2[0]["train_loss"] < 0.8 * m1[0]["train_loss"], (m1[0], m2[0])
    assert m2[0]["train_loss"] <= m1[-1]["train_loss"] * 1.1

    # another project's ft: model: OpenAI's 400 on `model`
    other = srv.client(srv.create_key("other-team"))
    other_train = upload(other, jsonl(10))
    with pytest.raises(openai.BadRequestError) as info:
        other.fine_tuning.jobs.create(model=done1.fine_tuned_model, training_file=other_train)
    err = info.value
    assert err.status_code == 400 and err.param == "model" and err.code == "model_not_available"
    assert err.body["message"] == (
        f"Model {done1.fine_tuned_model} is not available for "
        "fine-tuning or does not exist. Available base models: "
        "tuneforge-tiny."
    )


def test_result_file_base64_when_configured(server_factory):
    srv64 = server_factory({**FAST, "TUNEFORGE_RESULT_FILES_BASE64": "true"})
    c = srv64.client()
    job = create(c, "tuneforge-tiny", upload(c, jsonl(10)), epochs=1, batch_size=5)
    done = watch(c, job.id, FINISHED)
    assert done.status == "succeeded", done.error
    meta = c.files.retrieve(done.result_files[0])
    assert (meta.filename, meta.purpose) == ("step_metrics.csv", "fine-tune-results")
    raw = c.files.content(done.result_files[0]).content
    assert not raw.startswith(b"step,")
    assert meta.bytes == len(raw)
    rows = list(csv.reader(io.StringIO(base64.b64decode(raw, validate=True).decode())))
    assert rows[0] == HEADER and [int(r[0]) for r in rows[1:]] == [1, 2]


def test_a_base_listed_for_full_fine_tuning_trains_every_weight(server_factory):
    # OpenAI's API has no LoRA/full switch: the operator's setting decides, per base model.
    from tuneforge.config import Settings
    from tuneforge.store.blobs import open_blobs

    srv = server_factory({**FAST, "TUNEFORGE_FULL_FINE_TUNE_MODELS": '["tuneforge-tiny"]'})
    c = srv.client()
    job = create(c, "tuneforge-tiny", upload(c, jsonl(10)), epochs=1, batch_size=5)
    done = watch(c, job.id, FINISHED)
    assert done.status == "succeeded", done.error
    row = ft_rows(srv)[done.fine_tuned_model]
    assert row.kind == "full"
    model_dir = open_blobs(Settings(data_dir=srv.data_dir).resolved()).local_dir(row.path)
    assert (model_dir / "model.safetensors").is_file()  # its own weights, not an adapter
    assert not (model_dir / "adapter_config.json").exists()
    r = c.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "What is 3 + 3?"}], max_tokens=4
    )
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1
