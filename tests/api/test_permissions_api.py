"""Checkpoint permissions on SQLite and PostgreSQL, through the openai SDK over the app (no
training: the fine-tuned model row is written as a finished job would). The trained-model flow
(the other project chats, fine-tunes on top, revoke) is tests/e2e/test_export_share_e2e.py."""

from __future__ import annotations

import openai
import pytest

from tests.helpers import upload_pairs
from tuneforge.ids import now
from tuneforge.services.keys import get_or_create_project
from tuneforge.store.db import transaction
from tuneforge.store.tables import FineTunedModel

FT = "ft:tuneforge-tiny:default:p:abcd1234"


def sdk(app_client, headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=headers["Authorization"].split()[1],
        http_client=app_client,
        max_retries=0,
        _strict_response_validation=True,
    )


@pytest.fixture
def shared_setup(app_client, make_key, tmp_path):
    owner = sdk(app_client, make_key("default"))
    training_file = upload_pairs(owner, [(f"q{i}", f"a{i}") for i in range(10)])
    job = owner.fine_tuning.jobs.create(model="tuneforge-tiny", training_file=training_file)
    with transaction(app_client.app.state.sessionmaker) as session:
        project = get_or_create_project(session, "default")
        session.add(
            FineTunedModel(
                id=FT,
                project_id=project.id,
                job_id=job.id,
                kind="lora",
                base_model="tuneforge-tiny",
                path=str(tmp_path),
                created_at=now(),
            )
        )
        others = [get_or_create_project(session, f"other-{i}").id for i in range(3)]
    return owner, sdk(app_client, make_key("default", admin=True)), others


def test_admin_shares_lists_and_revokes(app_client, make_key, shared_setup):
    owner, admin, others = shared_setup
    other = sdk(app_client, make_key("other-0"))
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(FT)
    with pytest.raises(openai.PermissionDeniedError) as err:
        owner.fine_tuning.checkpoints.permissions.create(FT, project_ids=[others[0]])
    assert err.value.body["code"] == "insufficient_permissions"

    created = admin.fine_tuning.checkpoints.permissions.create(FT, project_ids=others).data
    assert [p.project_id for p in created] == others
    assert other.models.retrieve(FT).id == FT  # the resolver: shared with it
    assert FT in {m.id for m in other.models.list()}
    with pytest.raises(openai.NotFoundError):  # using is not owning
        other.models.delete(FT)

    page = admin.fine_tuning.checkpoints.permissions.retrieve(FT, limit=2, order="ascending")
    assert len(page.data) == 2 and page.has_more and page.last_id == page.data[-1].id
    everything = list(admin.fine_tuning.checkpoints.permissions.list(FT, limit=1))
    assert sorted(p.id for p in everything) == sorted(p.id for p in created)

    admin.fine_tuning.checkpoints.permissions.delete(created[0].id, fine_tuned_model_checkpoint=FT)
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(FT)
    with pytest.raises(openai.NotFoundError):  # already gone
        admin.fine_tuning.checkpoints.permissions.delete(created[0].id, fine_tuned_model_checkpoint=FT)


def test_bad_requests_are_openai_errors(shared_setup):
    _, admin, others = shared_setup
    with pytest.raises(openai.NotFoundError) as err:
        admin.fine_tuning.checkpoints.permissions.create("ft:nope", project_ids=others)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        admin.fine_tuning.checkpoints.permissions.create(FT, project_ids=["proj_missing"])
    assert err.value.body["param"] == "project_ids"
    with pytest.raises(openai.BadRequestError):
        admin.fine_tuning.checkpoints.permissions.retrieve(FT, after="cp_missing")
