"""The job state machine: legal moves update the dependent fields; illegal moves are refused."""

from __future__ import annotations

import pytest

from tuneforge.domain.states import ALLOWED, TERMINAL, IllegalTransition, Status, transition
from tuneforge.errors import InvalidRequest
from tuneforge.store.tables import Job


def job(status: Status, **kw) -> Job:
    return Job(
        id="ftjob-x",
        status=status.value,
        error=None,
        requested_action=None,
        lease_owner="w1",
        lease_expires_at=99,
        started_at=None,
        finished_at=None,
        estimated_finish=None,
        updated_at=0,
        **kw,
    )


def test_happy_path_sets_timestamps_and_frees_the_lease():
    j = job(Status.VALIDATING_FILES)
    transition(j, Status.QUEUED, at=10)
    assert (j.status, j.lease_owner, j.lease_expires_at) == ("queued", None, None)
    j.lease_owner = "w1"
    transition(j, Status.RUNNING, at=20)
    assert j.started_at == 20 and j.lease_owner == "w1"  # the runner keeps its lease
    j.estimated_finish = 99
    transition(j, Status.SUCCEEDED, at=30)
    assert (j.finished_at, j.estimated_finish, j.lease_owner) == (30, None, None)


def test_started_at_is_kept_when_a_paused_job_runs_again():
    j = job(
        Status.RUNNING,
    )
    j.started_at = 5
    j.requested_action = "pause"
    transition(j, Status.PAUSED, at=7)
    assert j.requested_action is None and j.finished_at is None
    transition(j, Status.QUEUED, at=8)
    transition(j, Status.RUNNING, at=9)
    assert j.started_at == 5


@pytest.mark.parametrize("terminal", sorted(TERMINAL, key=lambda s: s.value))
@pytest.mark.parametrize("target", list(Status))
def test_terminal_states_are_final(terminal, target):
    j = job(terminal)
    with pytest.raises(IllegalTransition) as info:
        transition(j, target)
    assert isinstance(info.value, InvalidRequest) and info.value.status == 400
    assert j.status == terminal.value


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.VALIDATING_FILES, Status.RUNNING),  # never trains unvalidated files
        (Status.VALIDATING_FILES, Status.PAUSED),
        (Status.QUEUED, Status.PAUSED),
        (Status.QUEUED, Status.SUCCEEDED),
        (Status.PAUSED, Status.RUNNING),  # resume goes through the queue
        (Status.PAUSED, Status.SUCCEEDED),
    ],
)
def test_illegal_moves_are_refused_and_change_nothing(current, target):
    j = job(current)
    with pytest.raises(IllegalTransition, match=f"from status '{current.value}' to '{target.value}'"):
        transition(j, target)
    assert j.status == current.value and j.lease_owner == "w1"


def test_failed_keeps_error_others_clear_it():
    j = job(Status.RUNNING)
    j.error = {"code": "x", "message": "m", "param": None}
    transition(j, Status.FAILED)
    assert j.error is not None
    j2 = job(Status.RUNNING)
    j2.error = {"code": "stale", "message": "m", "param": None}
    transition(j2, Status.CANCELLED)
    assert j2.error is None


def test_every_status_has_a_rule():
    assert set(ALLOWED) == set(Status)
