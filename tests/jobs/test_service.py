"""services/jobs.py on both databases: every bad create parameter is a 400 naming its param;
lifecycle requests; list/events/checkpoints pagination and project scoping."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from tuneforge.domain import events as ev
from tuneforge.errors import InvalidRequest, NotFound
from tuneforge.services import jobs as service
from tuneforge.services.keys import get_or_create_project
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job, JobCheckpoint, JobEvent

BAD = [
    ({"model": "gpt-5-nonexistent"}, "model"),
    ({"model": "ft:tuneforge-tiny:acme::deadbeef"}, "model"),
    ({"training_file": "file-missing"}, "training_file"),
    ({"validation_file": "file-missing"}, "validation_file"),
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 2.5}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"batch_size": True}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"learning_rate_multiplier": "fast"}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"warmup": 3}}, "hyperparameters.warmup"),
    (
        {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": -1}}}},
        "method.supervised.hyperparameters.n_epochs",
    ),
    ({"method": {"type": "reinforcement"}}, "method.type"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, "method.dpo.hyperparameters.beta"),
    (
        {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
        "method.dpo.hyperparameters.beta",
    ),
    (
        {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "high"}}}},
        "method.dpo.hyperparameters.beta",
    ),
    (
        {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": True}}}},
        "method.dpo.hyperparameters.beta",
    ),
    (
        {"method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 0}}}},
        "method.dpo.hyperparameters.n_epochs",
    ),
    (
        {"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}},
        "method.supervised.hyperparameters.beta",
    ),
    ({"method": {"type": "dpo", "supervised": {}}}, "method"),
    ({"method": {"type": "dpo", "dpo": {"beta": 0.1}}}, "method.dpo"),
    ({"method": {"type": "dpo"}, "hyperparameters": {"n_epochs": 3}}, "hyperparameters"),
    ({"method": {"type": "magic"}}, "method.type"),
    (
        {
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
            "hyperparameters": {"n_epochs": 3},
        },
        "hyperparameters",
    ),
    ({"suffix": ""}, "suffix"),
    ({"suffix": "x" * 65}, "suffix"),
    ({"suffix": "bad:colon"}, "suffix"),
    ({"seed": -1}, "seed"),
    ({"seed": 2_147_483_648}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k"),
    ({"metadata": {"k": 3}}, "metadata.k"),
    ({"integrations": [{"type": "wandb", "wandb": {}}]}, "integrations[0].wandb.project"),
    ({"integrations": [{"type": "slack"}]}, "integrations[0].type"),
]


@pytest.mark.parametrize(("fields", "param"), BAD, ids=[p for _, p in BAD])
def test_each_bad_parameter_is_a_400_naming_it(create, db, fields, param):
    with pytest.raises(InvalidRequest) as info:
        create(**fields)
    assert info.value.status == 400
    assert info.value.param == param
    with db() as s:  # nothing half-written
        assert s.scalar(select(Job.id)) is None


def test_reinforcement_message_says_not_supported_yet(create):
    with pytest.raises(InvalidRequest, match="'reinforcement' is not supported yet"):
        create(method={"type": "reinforcement"})


def test_a_dpo_job_echoes_its_method_with_beta(create, db):
    jid = create(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5, "n_epochs": 2}}})
    auto = create(method={"type": "dpo"})
    with db() as s:
        wire = service.job_to_wire(s.get(Job, jid), "org-1").model_dump()
        auto_wire = service.job_to_wire(s.get(Job, auto), "org-1").model_dump()
    assert wire["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "batch_size": "auto",
                "beta": 0.5,
                "learning_rate_multiplier": "auto",
                "n_epochs": 2,
            }
        },
    }
    assert wire["hyperparameters"] == {
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "n_epochs": 2,
    }
    assert auto_wire["method"]["dpo"]["hyperparameters"]["beta"] == "auto"


def test_unknown_file_message_is_openais(create):
    with pytest.raises(InvalidRequest, match=r"^invalid training_file: file-nope$"):
        create(training_file="file-nope")


def test_file_with_wrong_purpose_or_other_project_is_invalid(create, upload, db):
    with pytest.raises(InvalidRequest) as info:
        create(training_file=upload("x\n", purpose="batch"))
    assert info.value.param == "training_file"
    with transaction(db) as s:
        other = get_or_create_project(s, "other")
    with pytest.raises(InvalidRequest):
        create(training_file=upload("x\n", project_id=other.id))


def test_create_stores_everything_and_records_two_events(create, db, upload):
    vf = upload("{}\n")
    jid = create(
        validation_file=vf,
        suffix="bot_v1.2",
        seed=42,
        metadata={"team": "ml"},
        integrations=[{"type": "wandb", "wandb": {"project": "p", "tags": ["a"]}}],
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}},
        },
    )
    with db() as s:
        job = s.get(Job, jid)
        wire = service.job_to_wire(job, "org-1").model_dump()
        events = s.scalars(select(JobEvent).where(JobEvent.job_id == jid).order_by(JobEvent.seq)).all()
    assert wire["status"] == "validating_files" and wire["seed"] == 42
    assert wire["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }
    assert wire["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert wire["integrations"][0]["wandb"] == {"project": "p", "name": None, "entity": None, "tags": ["a"]}
    assert wire["error"] is None and wire["fine_tuned_model"] is None
    assert [e.message for e in events] == [
        f"Created fine-tuning job: {jid}",
        f"Validating training file: {job.training_file} and validation file: {vf}",
    ]
    assert all(e.data == {} and e.level == "info" for e in events)


def test_deprecated_top_level_hyperparameters_and_generated_seed(create, db):
    jid = create(hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 2})
    with db() as s:
        job = s.get(Job, jid)
    assert job.method["supervised"]["hyperparameters"]["n_epochs"] == 3
    assert job.method["supervised"]["hyperparameters"]["learning_rate_multiplier"] == 2.0
    assert 0 <= job.seed <= 2_147_483_647


def _status(db, jid, **values):
    with transaction(db) as s:
        s.execute(update(Job).where(Job.id == jid).values(**values))


def test_cancel_pause_resume_rules(create, db, project):
    pid = project.id
    jid = create()
    with transaction(db) as s:  # not running: cancelled at once, with a warn event
        assert service.cancel_job(s, pid, jid).status == "cancelled"
    with transaction(db) as s, pytest.raises(InvalidRequest, match="already cancelled"):
        service.cancel_job(s, pid, jid)
    with db() as s:
        last = s.scalars(select(JobEvent).where(JobEvent.job_id == jid).order_by(JobEvent.seq.desc())).first()
    assert (last.level, last.message) == ("warn", ev.CANCELLED)

    jid = create()
    with transaction(db) as s, pytest.raises(InvalidRequest, match="Only a running job"):
        service.pause_job(s, pid, jid)
    _status(db, jid, status="running")
    with transaction(db) as s:  # running: a request the child acts on
        job = service.pause_job(s, pid, jid)
        assert (job.status, job.requested_action) == ("running", "pause")
    with transaction(db) as s, pytest.raises(InvalidRequest, match="Only a paused job"):
        _status(db, jid, status="succeeded")
        service.resume_job(s, pid, jid)
    _status(db, jid, status="paused", requested_action=None, attempts=2)
    with transaction(db) as s:
        job = service.resume_job(s, pid, jid)
        assert (job.status, job.attempts) == ("queued", 0)
    _status(db, jid, status="running")
    with transaction(db) as s:
        assert service.cancel_job(s, pid, jid).requested_action == "cancel"
    with transaction(db) as s, pytest.raises(InvalidRequest, match="being cancelled"):
        service.pause_job(s, pid, jid)


def test_other_projects_jobs_are_invisible(create, db, project):
    jid = create()
    with transaction(db) as s:
        other = get_or_create_project(s, "intruder").id
    with db() as s:
        for call in (service.get_job, service.list_events, service.list_checkpoints):
            with pytest.raises(NotFound):
                call(s, other, jid)
        assert service.list_jobs(s, other).items == []
        with pytest.raises(NotFound):
            service.cancel_job(s, other, jid)


def test_list_jobs_newest_first_with_cursor_and_metadata_filter(create, db, project):
    ids = [create(metadata={"n": str(i), "even": str(i % 2 == 0)}) for i in range(5)]
    for i, jid in enumerate(ids):
        _status(db, jid, created_at=1000 + i)
    with db() as s:
        page = service.list_jobs(s, project.id, limit=2)
        assert [j.id for j in page.items] == ids[::-1][:2] and page.has_more
        page = service.list_jobs(s, project.id, limit=2, after=page.items[-1].id)
        assert [j.id for j in page.items] == ids[::-1][2:4] and page.has_more
        page = service.list_jobs(s, project.id, limit=2, after=page.items[-1].id)
        assert [j.id for j in page.items] == [ids[0]] and not page.has_more
        page = service.list_jobs(s, project.id, limit=2, metadata={"even": "True"})
        assert [j.id for j in page.items] == [ids[4], ids[2]] and page.has_more
        page = service.list_jobs(s, project.id, limit=2, metadata={"even": "True"}, after=ids[2])
        assert [j.id for j in page.items] == [ids[0]] and not page.has_more


def test_events_and_checkpoints_newest_first_with_after(create, db, project):
    jid = create()
    with transaction(db) as s:
        for i in range(5):
            ev.add_event(s, jid, f"e{i}")
        for step in (10, 20, 30):
            s.add(
                JobCheckpoint(
                    id=f"ftckpt_{step}",
                    job_id=jid,
                    created_at=1,
                    step_number=step,
                    fine_tuned_model_checkpoint=f"ft:x:y::z:ckpt-step-{step}",
                    metrics={"step": step},
                )
            )
    with db() as s:
        page = service.list_events(s, project.id, jid, limit=3)
        assert [e.message for e in page.items] == ["e4", "e3", "e2"] and page.has_more
        rest = service.list_events(s, project.id, jid, limit=10, after=page.items[-1].id)
        assert [e.message for e in rest.items][:2] == ["e1", "e0"] and not rest.has_more
        assert len(rest.items) == 4  # + the two creation events
        ck = service.list_checkpoints(s, project.id, jid, limit=2)
        assert [c.step_number for c in ck.items] == [30, 20] and ck.has_more
        ck = service.list_checkpoints(s, project.id, jid, after=ck.items[-1].id)
        assert [c.step_number for c in ck.items] == [10] and not ck.has_more
        with pytest.raises(InvalidRequest):
            service.list_events(s, project.id, jid, after="ftevent-nope")
