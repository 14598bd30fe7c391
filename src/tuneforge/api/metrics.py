"""Prometheus metrics at GET /metrics (unauthenticated, like /health; an operator endpoint).

Request counts and latencies are recorded by a middleware, labelled by the route *template*
(`/v1/fine_tuning/jobs/{job_id}`, never the raw path, so ids do not explode the label set).
Job and token figures are read from the database at scrape time, so every server and worker
process agrees on them without any shared in-memory state. Each app has its own registry.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.serving_metrics import ServingCollector, VllmCollector
from tuneforge.domain.states import Status
from tuneforge.store.tables import Job, UsageRecord

router = APIRouter(tags=["operations"])


class Metrics:
    def __init__(self, app: FastAPI):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneforge_http_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tuneforge_http_request_duration_seconds",
            "Time to the end of the response body",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.registry.register(_DatabaseCollector(app))
        self.registry.register(ServingCollector(app))  # inference engine sequences
        self.registry.register(VllmCollector(app))  # vLLM servers and their adapters


class _DatabaseCollector:
    """Gauges and counters computed from the database when Prometheus scrapes."""

    def __init__(self, app: FastAPI):
        self._app = app

    def describe(self):  # nothing to describe up front: no query at registration time
        return []

    def collect(self):
        factory = getattr(self._app.state, "sessionmaker", None)
        if factory is None:
            return
        with factory() as s:
            by_status = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            trained = s.scalar(select(func.coalesce(func.sum(Job.trained_tokens), 0)))
            prompt, completion = s.execute(
                select(
                    func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
                    func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
                )
            ).one()
        jobs = GaugeMetricFamily("tuneforge_jobs", "Fine-tuning jobs by status", labels=["status"])
        for status in Status:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily(
            "tuneforge_queue_depth", "Jobs queued for training", value=by_status.get(Status.QUEUED.value, 0)
        )
        yield GaugeMetricFamily(
            "tuneforge_running_jobs", "Jobs training now", value=by_status.get(Status.RUNNING.value, 0)
        )
        yield CounterMetricFamily(
            "tuneforge_trained_tokens", "Tokens trained by finished jobs", value=int(trained)
        )
        served = CounterMetricFamily("tuneforge_served_tokens", "Inference tokens served", labels=["type"])
        served.add_metric(["prompt"], int(prompt))
        served.add_metric(["completion"], int(completion))
        yield served


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI) -> None:
    app.state.metrics = Metrics(app)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
