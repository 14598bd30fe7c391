"""`tuneforge keys` works without a server, honours --data-dir and TUNEFORGE_DATA_DIR."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.conftest import TUNEFORGE, start_server


def keys(*args: str, env: dict[str, str] | None = None, check: bool = True):
    return subprocess.run(
        [TUNEFORGE, "keys", *args],
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_keys_cli_without_server(tmp_path):
    flag_dir, env_dir = tmp_path / "by-flag", tmp_path / "by-env"
    secret = keys("create", "--project", "team-a", "--data-dir", str(flag_dir)).stdout.splitlines()[-1]
    assert secret.startswith("sk-tf-") and (flag_dir / "tuneforge.db").exists()
    keys("create", "--admin", env={"TUNEFORGE_DATA_DIR": str(env_dir)})
    assert (env_dir / "tuneforge.db").exists()

    listing = keys("list", "--data-dir", str(flag_dir)).stdout
    assert "team-a" in listing and secret not in listing and secret[-4:] in listing
    assert keys("revoke", "key_nope", "--data-dir", str(flag_dir), check=False).returncode == 1

    # a server on that data dir accepts the key made offline, and prints no first-start key
    srv = start_server(flag_dir)
    try:
        assert "First start" not in srv.log()
        assert list(srv.client(secret).files.list()) == []
    finally:
        srv.stop()


def test_parallel_upload_parts(server):
    c = server.client(server.create_key("parallel"))
    chunks = [bytes([65 + i]) * 300_000 for i in range(6)]
    up = c.uploads.create(
        bytes=sum(map(len, chunks)), filename="p.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    with ThreadPoolExecutor(6) as pool:
        parts = list(pool.map(lambda data: c.uploads.parts.create(up.id, data=data), chunks))
    done = c.uploads.complete(up.id, part_ids=[p.id for p in parts])
    assert c.files.content(done.file.id).read() == b"".join(chunks)
