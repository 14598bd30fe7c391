"""The Ray executor's decisions that need no cluster (tests/e2e/test_ray.py runs a real one):

- which resources a job asks for: the TUNEFORGE_RAY_* defaults, overridden per base model (by its
  name, an alias of it, or an `ft:` model made from it);
- what a failed Ray Train run means for the job, on Ray's own exception types: the training's own
  error fails the job as in local mode (the echo of it on other ranks ignored), a dead worker or a
  controller failure gives the job back (ExecutorLost), a request no cluster node can meet fails
  it with `insufficient_resources`;
- the local executor never imports Ray.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from tuneforge.catalog import Catalog
from tuneforge.config import RayResources, Settings
from tuneforge.errors import InvalidRequest, TuneforgeError
from tuneforge.jobs.executors import ExecutorLost
from tuneforge.jobs.ray_executor import failure_of, resources_for
from tuneforge.training.parallel import PeerLost, uses_fsdp


def test_resources_default_and_per_base_model(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        base_models={"llama": "/srv/llama", "qwen": "/srv/qwen"},
        model_aliases={"gpt-4o-mini": "llama"},
        ray_workers=2,
        ray_cpus_per_worker=4,
        ray_sharding="ddp",
        ray_resources={
            "llama": RayResources(workers=8, gpus_per_worker=1, sharding="fsdp"),
            "qwen": RayResources(workers=3),
        },
    )
    catalog = Catalog(settings)

    def asks(model: str) -> tuple:
        r = resources_for(settings, catalog, model)
        return r.workers, r.cpus_per_worker, r.gpus_per_worker, r.sharding

    assert asks("tuneforge-tiny") == (2, 4, 0, "ddp")  # the defaults
    assert asks("llama") == (8, 4, 1, "fsdp")  # fields left out keep the defaults
    assert asks("gpt-4o-mini") == (8, 4, 1, "fsdp")  # an alias: its base's override
    assert asks("ft:llama:acme:v1:AbCdEf12") == (8, 4, 1, "fsdp")  # continued training of a llama fine-tune
    assert asks("qwen") == (3, 4, 0, "ddp")
    assert Settings(data_dir=tmp_path).ray_sharding == "auto"


def test_which_runs_are_sharded():
    # the one rule: FSDP for a full fine-tune over several ranks, unless ddp is asked for
    assert uses_fsdp("auto", "full", 2) and uses_fsdp("fsdp", "full", 4)
    assert not uses_fsdp("ddp", "full", 2)
    assert not uses_fsdp("auto", "full", 1) and not uses_fsdp("fsdp", "full", 1)  # nothing to split
    assert not uses_fsdp("auto", "lora", 2) and not uses_fsdp("fsdp", "lora", 2)


def test_bad_ray_settings_are_refused(tmp_path):
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ray_workers=0)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ray_resources={"x": {"gpus_per_worker": -1}})
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, executor="slurm")
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ray_sharding="zero3")


def test_what_a_failed_ray_run_means_for_the_job():
    from ray.train import ControllerError, WorkerGroupError
    from ray.train.v2._internal.exceptions import (
        InsufficientClusterResourcesError,
        WorkerGroupStartupTimeoutError,
        WorkerHealthCheckFailedError,
    )

    bad_line = InvalidRequest("Line 3: no assistant message", code="invalid_training_file")
    # The training raised on rank 0; rank 1 lost its peer in the next collective: the job fails
    # with rank 0's error, as it would in local mode.
    got = failure_of(WorkerGroupError("x", {0: bad_line, 1: PeerLost("rank 1: closed by peer")}))
    assert got is bad_line
    bug = ZeroDivisionError("division by zero")
    assert failure_of(WorkerGroupError("x", {1: bug})) is bug

    # Rank 0's process died (the OOM killer, a node going away): the job is given back.
    died = WorkerHealthCheckFailedError("A worker health check failed.", RuntimeError("actor died"))
    got = failure_of(WorkerGroupError("x", {0: died, 1: PeerLost("rank 1: closed by peer")}))
    assert isinstance(got, ExecutorLost)
    assert str(got) == "A Ray training worker (rank 0) stopped unexpectedly: A worker health check failed."
    assert isinstance(failure_of(WorkerGroupError("x", {1: PeerLost("gone")})), ExecutorLost)
    got = failure_of(ControllerError(WorkerGroupStartupTimeoutError(2)))
    assert isinstance(got, ExecutorLost) and str(got).startswith("The Ray training run failed: ")

    # A request the cluster can never meet: a clear job error, not endless retries.
    got = failure_of(ControllerError(InsufficientClusterResourcesError("needs 4 GPU, has 0")))
    assert isinstance(got, TuneforgeError) and got.code == "insufficient_resources"
    assert "needs 4 GPU, has 0" in got.message


def test_the_local_executor_does_not_import_ray(tmp_path):
    code = (
        "import sys\n"
        "from tuneforge.config import Settings\n"
        "from tuneforge.jobs import runner, worker\n"
        "from tuneforge.jobs.executors import LocalExecutor, executor_for\n"
        f"s = Settings(data_dir={str(tmp_path)!r}).resolved()\n"
        "assert isinstance(executor_for(s, None), LocalExecutor)\n"
        "import tuneforge.training.sft, tuneforge.training.dpo\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
