"""One vLLM OpenAI server per base model: started and supervised by tuneforge, or the operator's.

A started server runs `settings.vllm_command` plus the LoRA / length / dtype arguments in its own
process group, with runtime LoRA loading on (`VLLM_ALLOW_RUNTIME_LORA_UPDATING`). A supervisor
thread waits for `/health`, then for the process; when it dies it is started again (after a
backoff if it died while starting). `epoch` counts the starts that became healthy: the adapters
registered in a server are forgotten when its epoch changes, because a new process has none.

Requests never wait for a server to come up: `require_ready` raises `Unavailable` (503 with
Retry-After) while it is starting or restarting.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tuneforge.config import Settings
from tuneforge.errors import Unavailable

log = logging.getLogger(__name__)

SERVED_NAME = "base"  # the base model's name inside a server we start (adapters get their own)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, Linux only: SIGTERM when the thread that started it dies, so a tuneforge
    process that is killed outright leaves no vLLM server behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VllmServer:
    def __init__(
        self, settings: Settings, source: str, *, url: str | None = None, port: int = 0, log_dir: Path
    ):
        self.settings = settings
        self.source = source
        self.external = url is not None
        self.url = (url or "").rstrip("/")
        self._port = port
        self._log_path = log_dir / f"vllm-{hashlib.sha256(source.encode()).hexdigest()[:12]}.log"
        self._proc: subprocess.Popen | None = None
        self._ready = self.external  # the operator's server is taken as up until a request fails
        self.epoch = 1 if self.external else 0
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.active = 0  # requests in flight (the engine counts them, on the event loop)
        self._served: str | None = None if self.external else SERVED_NAME

    @property
    def served_name(self) -> str:
        """The base model's name inside the server: ours is "base"; the operator's says in
        /v1/models (the model that is no adapter's parent-less root)."""
        if self._served is None:
            try:
                data = httpx.get(f"{self.url}/v1/models", timeout=10).json()["data"]
                self._served = next(m["id"] for m in data if not m.get("parent"))
            except (httpx.HTTPError, KeyError, ValueError, StopIteration) as exc:
                self.mark_down()
                raise Unavailable(
                    f"The vLLM server at {self.url} does not answer /v1/models.",
                    retry_after=self.settings.vllm_retry_after_seconds,
                ) from exc
        return self._served

    # ---- state -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        if self.external or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._supervise, name="vllm-supervisor", daemon=True)
        self._thread.start()

    def require_ready(self, model: str) -> None:
        self.start()
        if not self._ready:
            what = "unreachable" if self.external else "starting"
            raise Unavailable(
                f"The model `{model}` is not available right now: its vLLM server is {what}. "
                "Please retry after a few seconds.",
                retry_after=self.settings.vllm_retry_after_seconds,
            )

    def mark_down(self) -> None:
        """A request could not reach the server (it died or the operator's is down)."""
        if self.external:
            self._ready = False
            threading.Thread(target=self._watch_external, daemon=True).start()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the server is healthy (tests, benchmarks, warm-up)."""
        self.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    # ---- the supervised process ------------------------------------------------------------------
    def command(self, port: int) -> list[str]:
        s = self.settings
        cmd = [
            *shlex.split(s.vllm_command),
            "--model",
            self.source,
            "--served-model-name",
            SERVED_NAME,
            "--host",
            s.vllm_host,
            "--port",
            str(port),
            "--enable-lora",
            "--max-loras",
            str(s.vllm_max_loras),
            "--max-lora-rank",
            str(s.vllm_max_lora_rank),
            "--max-cpu-loras",
            str(max(s.vllm_max_adapters, s.vllm_max_loras)),
            "--dtype",
            s.vllm_dtype,
        ]
        if s.vllm_max_model_len:
            cmd += ["--max-model-len", str(s.vllm_max_model_len)]
        return cmd + shlex.split(s.vllm_args)

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            port = self._port or free_port(self.settings.vllm_host)
            self.url = f"http://{self.settings.vllm_host}:{port}"
            cmd = self.command(port)
            env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            log.info("starting vLLM for %s on port %d: %s", self.source, port, shlex.join(cmd))
            try:
                with open(self._log_path, "ab") as out:
                    self._proc = subprocess.Popen(
                        cmd,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
            except OSError as exc:
                log.error("cannot start vLLM (%s): %s", shlex.join(cmd), exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            proc = self._proc
            healthy = self._wait_healthy(proc)
            if healthy:
                backoff = 1.0
                with self._cond:
                    self.epoch += 1
                    self._ready = True
                    self._cond.notify_all()
                log.info("vLLM for %s is ready at %s (pid %d)", self.source, self.url, proc.pid)
                while proc.poll() is None and not self._stopping.is_set():
                    self._stopping.wait(0.5)
            self._ready = False
            self._kill(proc)
            if self._stopping.is_set():
                return
            self.restarts += 1
            log.warning(
                "vLLM for %s exited (code %s); restarting (log: %s)",
                self.source,
                proc.returncode,
                self._log_path,
            )
            if not healthy:
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _wait_healthy(self, proc: subprocess.Popen) -> bool:
        deadline = time.monotonic() + self.settings.vllm_start_timeout_seconds
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            self._stopping.wait(0.5)
        if not self._stopping.is_set():
            log.error("vLLM for %s did not become healthy in time (log: %s)", self.source, self._log_path)
        return False

    def _watch_external(self) -> None:
        while not self._ready and not self._stopping.is_set():
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    with self._cond:
                        self.epoch += 1  # it may have restarted: register adapters again
                        self._ready = True
                        self._cond.notify_all()
                    return
            except httpx.HTTPError:
                pass
            self._stopping.wait(1.0)

    @staticmethod
    def _kill(proc: subprocess.Popen, grace: float = 15.0) -> None:
        """SIGTERM the process group (vLLM's engine core is a child), then SIGKILL what is left."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:  # the leader is gone: make sure its children are too
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return

    def stop(self) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._kill(proc)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._ready = False
