"""`paused` on the wire vs the openai SDK 3.51 (whose FineTuningJob.status Literal lacks it).

tuneforge sends `paused`, as OpenAI's pause endpoint does. The SDK's default (non-strict) client
keeps the unknown value as a plain string, in retrieve and in list pages; strict response
validation refuses the whole response. If an SDK release adds `paused`, the strict assertion
fails and README's note can go."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import update

from tests.helpers import upload_pairs
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_paused_reads_in_default_mode_and_is_refused_in_strict_mode(app_client, make_key):
    secret = make_key()["Authorization"].split()[1]
    loose = openai.OpenAI(
        base_url="http://testserver/v1", api_key=secret, http_client=app_client, max_retries=0
    )
    training_file = upload_pairs(loose, [(f"q{i}", f"a{i}") for i in range(10)])
    job = loose.fine_tuning.jobs.create(model="tuneforge-tiny", training_file=training_file)
    with transaction(app_client.app.state.sessionmaker) as session:  # as a finished pause leaves it
        session.execute(update(Job).where(Job.id == job.id).values(status="paused"))

    assert loose.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert [j.status for j in loose.fine_tuning.jobs.list()] == ["paused"]
    raw = loose.fine_tuning.jobs.with_raw_response.retrieve(job.id)  # what strict users can read
    assert raw.http_response.json()["status"] == "paused"

    strict = openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=secret,
        http_client=app_client,
        max_retries=0,
        _strict_response_validation=True,
    )
    with pytest.raises(openai.APIResponseValidationError):
        strict.fine_tuning.jobs.retrieve(job.id)
