"""Training-data screening in the jobs' validation stage: a violating file fails its job with its
own error code and the offending line numbers; per-project off switch; pluggable classifier; and
the cost estimate recorded on jobs that pass."""

from __future__ import annotations

import pytest

from tuneforge.jobs.worker import Worker
from tuneforge.safety.screening import DEFAULT_POLICY, PatternClassifier, screen_file
from tuneforge.services.projects import update_settings
from tuneforge.store.db import transaction
from tuneforge.store.tables import Job

from .conftest import chat_lines

POLICY = {
    "violence": [r"(?i)\bhow to build a (?:bomb|weapon)\b"],
    "self-harm": [r"(?i)\bways to hurt myself\b"],
}
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from tuneforge.training.tiny import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def with_tiny(settings, tiny_dir):
    """The session's tiny model where the catalog looks for it (building it costs seconds)."""
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / tiny_dir.name).symlink_to(tiny_dir, target_is_directory=True)


def validate(settings, db, job_id):
    worker = Worker(settings, concurrency=0)
    try:
        assert worker.step()
    finally:
        worker.engine.dispose()
    with db() as s:
        return s.get(Job, job_id)


def test_pattern_policy_reports_lines_and_categories(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        chat_lines(
            12, extra={3: "Tell me how to build a bomb", 7: "ways to hurt myself and how to build a weapon"}
        )
    )
    result = screen_file(path, PatternClassifier(POLICY))
    assert result.violations == [(3, ["violence"]), (7, ["violence", "self-harm"])]
    code, message, param = result.job_error("training_file")
    assert (code, param) == ("training_file_screening_failed", "training_file")
    assert "line 3 (violence), line 7 (violence, self-harm)" in message


def test_default_policy_finds_credentials_anywhere_in_an_example(tmp_path):
    path = tmp_path / "train.jsonl"
    text = chat_lines(10)
    lines = text.splitlines()
    lines[4] = lines[4].replace("It is 10.", PEM.replace("\n", "\\n"))
    path.write_text("\n".join(lines) + "\n")
    result = screen_file(path, PatternClassifier(DEFAULT_POLICY))
    assert result.violations == [(5, ["secrets"])]
    clean = tmp_path / "clean.jsonl"
    clean.write_text(chat_lines(10))
    assert screen_file(clean, PatternClassifier(DEFAULT_POLICY)).n_violations == 0


def test_invalid_policy_pattern_is_a_clear_error():
    with pytest.raises(ValueError, match="invalid screening policy pattern"):
        PatternClassifier({"x": ["(unclosed"]})


class Shouting:
    """A stand-in for a model-based classifier: anything in capitals is 'shouting'."""

    def classify(self, text: str) -> list[str]:
        return ["shouting"] if text.isupper() else []


def make_shouting(settings):
    return Shouting()


def test_violating_file_fails_the_job_with_line_numbers(settings, db, create_job):
    settings = settings.model_copy(update={"screening_policy": POLICY})
    job_id = create_job(
        chat_lines(12, extra={4: "how to build a bomb at home?", 11: "list ways to hurt myself"})
    )
    job = validate(settings, db, job_id)
    assert job.status == "failed"
    assert job.error["code"] == "training_file_screening_failed"
    assert job.error["param"] == "training_file"
    assert "line 4 (violence), line 11 (self-harm)" in job.error["message"]


def test_validation_file_is_screened_too(settings, db, create_job, upload):
    settings = settings.model_copy(update={"screening_classifier": f"{__name__}:make_shouting"})
    valid = upload(chat_lines(10, extra={2: "WHY WONT YOU ANSWER"}))
    job = validate(settings, db, create_job(validation_file=valid))
    assert job.status == "failed" and job.error["code"] == "validation_file_screening_failed"
    assert "line 2 (shouting)" in job.error["message"]


def test_screening_can_be_turned_off_per_project(settings, db, create_job, with_tiny):
    settings = settings.model_copy(update={"screening_policy": POLICY})
    with transaction(db) as s:
        update_settings(s, "acme", screening=False)
    job = validate(settings, db, create_job(chat_lines(10, extra={1: "how to build a bomb"})))
    assert job.status == "queued", job.error


def test_passing_job_gets_a_cost_estimate(settings, db, create_job, with_tiny, tiny_dir):
    from transformers import AutoTokenizer

    from tuneforge.config import ModelPrice
    from tuneforge.training.data import validate_file

    settings = settings.model_copy(
        update={"prices": {"default": ModelPrice(training=5.0), "tuneforge-tiny": ModelPrice(training=25.0)}}
    )
    text = chat_lines(10)
    job = validate(settings, db, create_job(text, hyperparameters={"n_epochs": 2}))
    assert job.status == "queued", job.error
    path = settings.data_dir / "check.jsonl"
    path.write_text(text)
    expected = validate_file(path, tokenizer=AutoTokenizer.from_pretrained(tiny_dir), n_epochs=2)
    assert job.estimated_trained_tokens == expected.estimated_trained_tokens > 0
    assert job.training_price == 25.0
    assert job.estimated_cost == pytest.approx(job.estimated_trained_tokens * 25.0 / 1e6)
