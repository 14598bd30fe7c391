"""deploy/: the compose file parses, and wires what README "Scaling out" promises (docker itself
is not available to the tests: this reads the file as compose would, anchors and merges included)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tuneforge.config import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_two_api_processes_a_worker_and_a_ray_cluster_on_shared_stores():
    services = compose()["services"]
    assert {"postgres", "minio", "redis", "ray-head", "ray-worker", "api1", "api2", "lb", "worker"} <= set(
        services
    )
    for name in ("api1", "api2"):
        assert services[name]["command"].split()[:2] == ["tuneforge", "serve"]
        assert "--workers 0" in services[name]["command"]
    assert services["worker"]["command"] == "tuneforge worker"
    assert services["worker"]["environment"]["TUNEFORGE_EXECUTOR"] == "ray"
    assert services["worker"]["environment"]["TUNEFORGE_RAY_ADDRESS"].startswith("ray://ray-head:")
    assert "--head" in services["ray-head"]["command"]
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]

    # Every tuneforge process reads the same settings: one database, one bucket, one Redis.
    tuneforge = ["api1", "api2", "worker", "ray-head", "ray-worker"]
    envs = [services[n]["environment"] for n in tuneforge]
    known = set(Settings.model_fields)
    for env in envs:
        assert env["TUNEFORGE_BLOB_URL"].startswith("s3://")
        assert env["TUNEFORGE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        for var in env:  # no typo in a setting's name (the executor settings come with Ray)
            if var.startswith("TUNEFORGE_") and var not in ("TUNEFORGE_EXECUTOR", "TUNEFORGE_RAY_ADDRESS"):
                assert var.removeprefix("TUNEFORGE_").lower() in known, var
    assert (
        len({(e["TUNEFORGE_DATABASE_URL"], e["TUNEFORGE_BLOB_URL"], e["TUNEFORGE_REDIS_URL"]) for e in envs})
        == 1
    )
    # ... and each its own /data (a local cache, nothing shared through it).
    volumes = [v for n in ("api1", "api2", "worker") for v in services[n]["volumes"]]
    assert len(set(volumes)) == 3


def test_load_balancer_spreads_over_both_api_processes_and_streams():
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.findall(r"server (api\d):8000", conf) == ["api1", "api2"]
    assert "proxy_request_buffering off" in conf and "proxy_buffering off" in conf
    assert Path(
        DEPLOY / compose()["services"]["api1"]["build"]["dockerfile"].removeprefix("deploy/")
    ).is_file()
