"""A real Ray cluster on 127.0.0.1 for the tests and the benchmark (tests/jobs/test_ray.py,
benchmarks/bench_ray.py).

`ray start --head --block` with random ports and a temp dir of its own, its workers importing
tuneforge from this checkout; stopped through its own process (SIGINT: `ray start --block` then
stops everything it started), never with `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PORT_OPTIONS = (
    "--port",
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--min-worker-port",
)
WORKER_PORTS = 400  # --min-worker-port .. + this


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_range(size: int) -> int:
    """The start of `size` consecutive ports that are free now (worker ports)."""
    for _ in range(50):
        start = _free_ports(1)[0]
        if start + size >= 65535:
            continue
        try:
            held = []
            for p in range(start, start + size):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                held.append(s)
            return start
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port range for Ray's workers")


class RayHead:
    """`with RayHead(num_cpus=2) as head: head.address` -> "127.0.0.1:PORT"."""

    def __init__(self, num_cpus: int = 2, start_timeout: float = 180.0):
        self.num_cpus = num_cpus
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        # Short: Ray's unix socket paths under it must stay within 107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tfray-", dir="/tmp"))
        self.address = ""

    def start(self) -> RayHead:
        workers = _free_range(WORKER_PORTS)
        singles = [p for p in _free_ports(3 * len(PORT_OPTIONS)) if not workers <= p < workers + WORKER_PORTS]
        ports = singles[: len(PORT_OPTIONS) - 1] + [workers]
        args = [f"{opt}={port}" for opt, port in zip(PORT_OPTIONS, ports)]
        args.append(f"--max-worker-port={ports[-1] + WORKER_PORTS - 1}")
        ray = Path(sys.executable).with_name("ray")
        env = {
            **os.environ,
            # Ray's workers import tuneforge from this checkout (not another installed copy).
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        env.pop("RAY_ADDRESS", None)
        log = (self.temp_dir / "head.log").open("w")
        self.proc = subprocess.Popen(
            [
                str(ray),
                "start",
                "--head",
                "--block",
                f"--num-cpus={self.num_cpus}",
                "--num-gpus=0",
                "--node-ip-address=127.0.0.1",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                "--disable-usage-stats",
                *args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.address = f"127.0.0.1:{ports[0]}"
        deadline = time.monotonic() + self.start_timeout
        while "Ray runtime started" not in (self.temp_dir / "head.log").read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.temp_dir / "head.log").read_text()
                self.stop()
                raise RuntimeError(f"`ray start --head` did not come up:\n{text[-3000:]}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # `ray start --block` stops its processes on SIGINT
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
