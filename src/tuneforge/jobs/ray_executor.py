"""Training on a Ray cluster (TUNEFORGE_EXECUTOR=ray): one job = one Ray Train run.

The runner (runner.py, a child of the worker that claimed the job) connects to the cluster as a
Ray driver and starts a `TorchTrainer` of `workers` ranks (gloo on CPU, nccl on GPU) with the
resources of the job's base model (Settings.ray_*, overridden per base model by
Settings.ray_resources). Each rank builds the job's TrainSpec where it runs, through the same
store, blob and model interfaces as the runner (`runner.build_spec`), so it reads the job's files
however the blob store serves them on that machine, and runs the ordinary trainer
(training.train) as one rank of a data-parallel run (training/parallel.py).

Reporting: rank 0 writes to the database itself, with the same DbReporter as a local run (built
from `DbReporter.args`, on its own engine): the database is reachable from the cluster anyway
(PostgreSQL; SQLite when the cluster is this machine), and relaying every event, metric,
checkpoint and stop poll through the driver would be a second path for the same rows, with its
own failure modes. The other ranks report nothing; rank 0 broadcasts stop requests each step.

Bytes: no disk is assumed shared with the runner. Every rank brings the job's saved state to its
machine when it was saved elsewhere (job_state.restore, in build_spec); rank 0 publishes each state
it saves (the reporter's state_saved hook) and, at the end, the final model and result file
(executors.publish), and returns their keys: the runner only records them.

Failures: a training error (bad data, a bug, out of memory) ends `fit` with the rank's own
exception, which fails the job exactly as in local mode. A Ray worker or node that died, a peer
gone mid-collective, a controller failure: `ExecutorLost`, so the job is given back and resumes
from its saved state on the next claim (max_failures=0: the attempts are counted by our queue, as
for local runs). If the driver dies, Ray ends the run with it (its actors fate-share the driver).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.catalog import Catalog
from tuneforge.config import RayResources, Settings
from tuneforge.domain import naming
from tuneforge.errors import TuneforgeError
from tuneforge.ids import new_id
from tuneforge.jobs.executors import ExecutorLost, Trained, publish
from tuneforge.jobs.reporter import DbReporter
from tuneforge.services.resolver import ModelResolver
from tuneforge.store.tables import Job
from tuneforge.training.spec import ResolvedHyperparameters, TrainResult, TrainSpec

log = logging.getLogger("tuneforge.jobs.ray_executor")

# A stop request the Ray run has not acted on this long after it was made (its workers never
# started: the cluster lacks the resources; or they hang): the runner stops waiting for them.
STOP_GRACE_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 60.0
PASSED_ENV = ("TUNEFORGE_BF16",)  # environment of this runner that its Ray workers get too


def resources_for(settings: Settings, catalog: Catalog, base_model: str) -> RayResources:
    """What a job on `base_model` (a base name, an alias, or an `ft:` model of one) asks for:
    Settings.ray_resources of that name, else of the base it stands for, over the defaults."""
    name = naming.base_of(base_model)
    found = catalog.configured_source(name)
    override = settings.ray_resources.get(name) or (settings.ray_resources.get(found[0]) if found else None)
    o = override or RayResources()
    return RayResources(
        workers=o.workers if o.workers is not None else settings.ray_workers,
        cpus_per_worker=o.cpus_per_worker if o.cpus_per_worker is not None else settings.ray_cpus_per_worker,
        gpus_per_worker=o.gpus_per_worker if o.gpus_per_worker is not None else settings.ray_gpus_per_worker,
        sharding=o.sharding or settings.ray_sharding,
    )


def ray_address(settings: Settings) -> str:
    return settings.ray_address or os.environ.get("RAY_ADDRESS") or "auto"


class RayExecutor:
    def __init__(self, settings: Settings, factory: sessionmaker[Session]):
        try:
            import ray.train.torch  # noqa: F401
        except ImportError as exc:
            raise TuneforgeError(
                "TUNEFORGE_EXECUTOR=ray, but Ray Train is not installed where the worker runs "
                "(pip install 'tuneforge[ray]').",
                code="executor_unavailable",
            ) from exc
        self.settings = settings
        self.factory = factory

    def train(self, job: Job, spec: TrainSpec, reporter: DbReporter) -> Trained:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        with self.factory() as s:
            res = resources_for(self.settings, ModelResolver(self.settings).catalog(s), job.base_model)
        assert res.workers is not None and res.cpus_per_worker is not None and res.gpus_per_worker is not None
        per_worker: dict[str, float] = {"CPU": res.cpus_per_worker}
        if res.gpus_per_worker:
            per_worker["GPU"] = res.gpus_per_worker
        reporter.event(
            f"Training on the Ray cluster: {res.workers} data-parallel worker(s), each with "
            + ", ".join(f"{v:g} {k}" for k, v in per_worker.items()),
            data={"ray_workers": res.workers, "resources_per_worker": per_worker},
        )

        def trainer() -> Any:
            return TorchTrainer(
                _train_on_ray_worker,
                train_loop_config={
                    "settings": self.settings,
                    "job_id": job.id,
                    "reporter": reporter.args,
                    # torch threads per rank: its CPUs (Ray does not pin them; more would oversubscribe)
                    "threads": max(1, int(res.cpus_per_worker)) if res.cpus_per_worker else None,
                    # auto | ddp | fsdp: the trainer applies it (parallel.uses_fsdp, by method)
                    "sharding": res.sharding,
                },
                scaling_config=ScalingConfig(
                    num_workers=res.workers,
                    use_gpu=bool(res.gpus_per_worker),
                    resources_per_worker=per_worker,
                ),
                torch_config=TorchConfig(backend="nccl" if res.gpus_per_worker else "gloo"),
                run_config=RunConfig(
                    name=f"{job.id}-{new_id('', 6).lower()}",
                    storage_path=str(self.settings.data_dir / "ray"),
                    failure_config=FailureConfig(max_failures=0),
                ),
            )

        return self._fit(trainer, spec, reporter)

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        address = ray_address(self.settings)
        # The worker's precision override (hardware.py) holds for its Ray workers too.
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        try:
            ray.init(
                address=address,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": env} if env else None,
            )
        except Exception as exc:  # noqa: BLE001  (ConnectionError, or a bad address)
            raise ExecutorLost(f"Could not reach the Ray cluster at {address}: {exc}") from exc

    def _fit(self, trainer: Callable[[], Any], spec: TrainSpec, reporter: DbReporter) -> Trained:
        """Connect and run trainer().fit() in a thread, while this thread watches: a cluster not
        reached within CONNECT_TIMEOUT_SECONDS is ExecutorLost (ray.init can wait for minutes);
        rank 0 acts on a stop request within a step, and a run that has not ended
        STOP_GRACE_SECONDS after one is left behind. Either way this process exits next, and Ray
        ends what it started with its driver."""
        connected, done = threading.Event(), threading.Event()
        box: dict[str, Any] = {}

        def fit() -> None:
            try:
                self._connect()  # (off the main thread: Ray leaves SIGTERM's default handler alone)
                connected.set()
                box["result"] = trainer().fit()
            except BaseException as exc:  # noqa: BLE001  handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=fit, name="ray-fit", daemon=True).start()
        started = time.monotonic()
        asked_at: float | None = None
        while not done.wait(1.0):
            if not connected.is_set() and time.monotonic() - started > CONNECT_TIMEOUT_SECONDS:
                raise ExecutorLost(
                    f"Could not reach the Ray cluster at {ray_address(self.settings)} "
                    f"within {CONNECT_TIMEOUT_SECONDS:.0f}s"
                )
            stop = reporter.stop_requested()
            if stop is None:
                asked_at = None
                continue
            asked_at = asked_at or time.monotonic()
            if time.monotonic() - asked_at > STOP_GRACE_SECONDS:
                reporter.event(
                    f"The Ray workers did not act on the {stop.value} request within "
                    f"{STOP_GRACE_SECONDS:.0f}s (they may be waiting for cluster resources); "
                    "stopping without them",
                    level="warn",
                )
                return Trained(  # (the runner reads only the status of a stopped run)
                    TrainResult(
                        status="cancelled" if stop.value == "cancel" else "paused",
                        trained_tokens=0,
                        steps=0,
                        total_steps=0,
                        hyperparameters=ResolvedHyperparameters(),
                        final_dir=None,
                        metrics_csv=spec.output_dir / "step_metrics.csv",
                    )
                )
        if "error" in box:
            error = box["error"]
            raise error if isinstance(error, ExecutorLost) else failure_of(error)
        trained: Trained = box["result"].return_value
        return trained


def failure_of(exc: BaseException) -> BaseException:
    """What fit()'s exception means for the job: the training's own error (the job fails as it
    would locally), TuneforgeError for a request the cluster can never meet, else ExecutorLost."""
    from ray.exceptions import RayError
    from ray.train.v2._internal.exceptions import InsufficientClusterResourcesError, RayTrainError

    from tuneforge.training.parallel import PeerLost

    controller = getattr(exc, "controller_failure", None)
    if isinstance(controller, InsufficientClusterResourcesError):
        return TuneforgeError(
            f"The Ray cluster cannot run this job: {controller}", code="insufficient_resources"
        )
    failures: dict[int, BaseException] = getattr(exc, "worker_failures", None) or {}
    # Ray's own errors: a worker process or node died, a health check failed.
    died = {rank: e for rank, e in failures.items() if isinstance(e, RayError | RayTrainError)}
    # The training's own errors; a PeerLost is only the echo of another rank's end.
    raised = {r: e for r, e in failures.items() if r not in died and not isinstance(e, PeerLost)}
    if raised and not died:
        return raised[min(raised)]
    if died:
        rank = min(died)
        return ExecutorLost(
            f"A Ray training worker (rank {rank}) stopped unexpectedly: {_first_line(died[rank])}"
        )
    what = failures[min(failures)] if failures else exc
    return ExecutorLost(f"The Ray training run failed: {type(what).__name__}: {_first_line(what)}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _train_on_ray_worker(config: dict[str, Any]) -> Trained:
    """One rank of the job's run (runs in a Ray Train worker process). Every rank brings the
    job's saved state to its machine (build_spec), when it was saved elsewhere; rank 0 publishes
    the final model it wrote from here, and its Trained is fit()'s return value."""
    import ray.train
    import ray.train.torch

    from tuneforge.integrations.wandb import with_integrations
    from tuneforge.jobs.runner import build_spec
    from tuneforge.store.blobs import open_blobs
    from tuneforge.store.db import make_engine, make_sessionmaker
    from tuneforge.training import train
    from tuneforge.training.parallel import Parallel

    settings: Settings = config["settings"]
    blobs = open_blobs(settings)  # this machine's view of the same store (local dir or S3)
    ctx = ray.train.get_context()
    parallel = Parallel(
        ctx.get_world_rank(), ctx.get_world_size(), threads=config["threads"], sharding=config["sharding"]
    )
    engine = make_engine(str(settings.database_url))
    try:
        factory = make_sessionmaker(engine)
        with factory() as s:
            job = s.get(Job, config["job_id"])
            if job is None:
                raise TuneforgeError("The job no longer exists.", code="job_not_found")
            spec, start = build_spec(settings, s, blobs, job)
        spec = dataclasses.replace(spec, device=str(ray.train.torch.get_device()))
        reporter = db_reporter = None
        if parallel.is_main:
            db_reporter = DbReporter(factory, blobs=blobs, loaded_base=start.base_model, **config["reporter"])
            reporter = with_integrations(settings, job, spec, db_reporter)
        result: TrainResult = train(spec, reporter, parallel)
        return Trained(result) if db_reporter is None else publish(settings, db_reporter, result)
    finally:
        engine.dispose()
