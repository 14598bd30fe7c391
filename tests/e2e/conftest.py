"""A real `tuneforge serve` subprocess on a free port, driven with the real `openai` SDK.

`server_factory(env=None)` starts one (extra env such as TUNEFORGE_WORKERS=1 or
TUNEFORGE_DATABASE_URL=<pg_url> is passed through); `server` is a module-scoped default one;
`client` is an `openai.OpenAI` with a key of project "default" on it. Servers are stopped with
SIGTERM (graceful) at teardown; a server's log is printed when a test of the module failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base_url: str  # ends in /v1
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path
    _default_key: str | None = field(default=None, repr=False)

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def create_key(self, project: str = "default", *, admin: bool = False) -> str:
        """A new key via `tuneforge keys create` against the same data dir / database."""
        cmd = [TUNEFORGE, "keys", "create", "--project", project] + (["--admin"] if admin else [])
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True, timeout=60)
        return out.stdout.strip().splitlines()[-1]

    def client(self, key: str | None = None, **kwargs):
        from openai import OpenAI

        if key is None:
            if self._default_key is None:
                self._default_key = self.create_key("default")
            key = self._default_key
        return OpenAI(
            base_url=self.base_url, api_key=key, max_retries=0, _strict_response_validation=True, **kwargs
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait (graceful shutdown); kill if it hangs. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(
    data_dir: Path,
    env: dict[str, str] | None = None,
    *,
    tuneforge: str = TUNEFORGE,
    base_env: dict[str, str] | None = None,
) -> Server:
    """`tuneforge` / `base_env`: another installation's script and environment (tests/cli)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **(os.environ if base_env is None else base_env),
        "TUNEFORGE_DATA_DIR": str(data_dir),
        **(env or {}),
    }
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [tuneforge, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        base_url=f"http://127.0.0.1:{port}/v1", data_dir=data_dir, env=full_env, proc=proc, log_path=log_path
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tuneforge serve exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.root_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"tuneforge serve did not become healthy in {START_TIMEOUT}s:\n{server.log()}")


@pytest.fixture(scope="module")
def server_factory(request, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []
    failed_before = request.session.testsfailed

    def factory(env: dict[str, str] | None = None) -> Server:
        server = start_server(tmp_path_factory.mktemp("tuneforge"), env)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
        if request.session.testsfailed > failed_before:
            # Module teardown output is not shown by pytest for passing tests: write past capture.
            tail = "\n".join(server.log().splitlines()[-300:])
            sys.__stderr__.write(
                f"\n----- tuneforge serve log ({server.base_url}, {request.module.__name__}) -----\n{tail}\n"
            )


@pytest.fixture(scope="module")
def server(server_factory) -> Server:
    return server_factory()


@pytest.fixture
def client(server):
    return server.client()
