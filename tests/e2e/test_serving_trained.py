"""The end-to-end proof that training, saving and serving agree: two jobs fine-tune tuneforge-tiny
on the same ten questions with different answers; through a real server and the strict openai SDK,
concurrent requests to both models (batched together on one base) each get their own model's
trained answers exactly, a checkpoint answers too, and a deleted model is gone."""

from __future__ import annotations

import concurrent.futures as cf

import openai
import pytest

from tests.helpers import FINISHED, answer, upload_pairs, watch
from tests.training.helpers import QA

pytestmark = pytest.mark.slow

# Model B: the same questions, each answered with the next question's answer.
QB = [(q, QA[(i + 1) % len(QA)][1]) for i, (q, _) in enumerate(QA)]


def test_two_fine_tunes_answer_their_own_training_data_concurrently(server_factory):
    server = server_factory({"TUNEFORGE_WORKERS": "1", "TUNEFORGE_WORKER_POLL_SECONDS": "0.2"})
    client = server.client()
    jobs = [
        client.fine_tuning.jobs.create(
            model="tuneforge-tiny",
            training_file=upload_pairs(client, data),
            suffix=suffix,
            seed=1,
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 15, "batch_size": 1}},
            },
        )
        for data, suffix in ((QA, "qa"), (QB, "qb"))
    ]
    done = [watch(client, j.id, FINISHED, timeout=900) for j in jobs]
    assert [d.status for d in done] == ["succeeded", "succeeded"], [d.error for d in done]
    model_a, model_b = done[0].fine_tuned_model, done[1].fine_tuned_model
    assert {model_a, model_b} <= {m.id for m in client.models.list()}

    # All twenty questions at once, to both models: one mixed-adapter batch on the shared base.
    asks = [(model_a, q, a) for q, a in QA] + [(model_b, q, a) for q, a in QB]
    with cf.ThreadPoolExecutor(len(asks)) as pool:
        got = list(pool.map(lambda x: answer(client, x[0], x[1]), asks))
    right = [(text, reason) == (a, "stop") for (_, _, a), (text, reason) in zip(asks, got)]
    assert sum(right[:10]) >= 9 and sum(right[10:]) >= 9, list(zip(asks, got))

    ckpts = client.fine_tuning.jobs.checkpoints.list(jobs[0].id).data
    earlier = [c.fine_tuned_model_checkpoint for c in ckpts if c.fine_tuned_model_checkpoint != model_a]
    assert earlier
    text, _ = answer(client, earlier[0], QA[0][0])
    assert isinstance(text, str)

    client.models.delete(model_b)
    with pytest.raises(openai.NotFoundError):
        answer(client, model_b, QB[0][0])
    # model_a is untouched by the delete: alone now, it answers as it did inside the mixed batch
    assert answer(client, model_a, QA[0][0]) == got[0]
