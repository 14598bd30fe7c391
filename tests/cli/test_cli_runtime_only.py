"""Every documented CLI command, run as a user runs it after `pip install tuneforge`: real
subprocesses from a venv holding only the runtime dependencies (tests/cli/runtime_venv.py), against
a real server and a real worker started from that venv."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.runtime_venv import build
from tests.cli.runtime_venv import env as venv_env
from tests.e2e.conftest import start_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train.jsonl"
COMMANDS = (
    "serve",
    "keys",
    "projects",
    "files",
    "data",
    "train",
    "jobs",
    "usage",
    "webhooks",
    "worker",
    "models",
)


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    venv = tmp_path_factory.mktemp("runtime-venv")
    script = build(venv)
    data_dir = tmp_path_factory.mktemp("data")
    base = venv_env(venv, TUNEFORGE_DATA_DIR=str(data_dir), COLUMNS="200")
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TUNEFORGE_API_KEY", "TUNEFORGE_BASE_URL"):
        base.pop(name, None)

    def run(*args: str, check: bool = True, env: dict | None = None, timeout: float = 300):
        proc = subprocess.run(
            [str(script), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**base, **(env or {})},
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    return {"venv": venv, "script": script, "data_dir": data_dir, "env": base, "run": run}


def rows(stdout: str) -> list[list[str]]:
    """Piped table output: a header, then tab-separated rows, nothing cut."""
    lines = stdout.strip().splitlines()
    return [line.split("\t") for line in lines[1:]]


def test_runtime_venv_lacks_dev_packages(rt):
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('pytest', 'playwright', 'aiosmtpd') if u.find_spec(m)])"
    )
    out = subprocess.run(
        [str(rt["venv"] / "bin" / "python"), "-c", probe],
        env=rt["env"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    help_text = rt["run"]("--help").stdout
    assert all(re.search(rf"\b{name}\b", help_text) for name in COMMANDS)


@pytest.mark.slow  # trains tuneforge-tiny for an epoch
def test_offline_commands(rt, tmp_path):
    run = rt["run"]
    secret = run("keys", "create", "--project", "cli", "--name", "t").stdout.splitlines()[-1]
    assert secret.startswith("sk-tf-")
    [key] = list(rows(run("keys", "list", "--project", "cli").stdout))
    assert key[0].startswith("key_") and key[1] == "cli"
    assert json.loads(run("keys", "list", "--json").stdout)[0]["project"] == "cli"
    run("projects", "set", "cli", "--no-screening")
    [proj] = json.loads(run("projects", "list", "--json").stdout)
    assert proj["project"] == "cli" and proj["screening"] == "off"
    hook = run("webhooks", "add", "--url", "http://127.0.0.1:9/hook").stdout
    hook_id = re.search(r"\b(we_\w+)", hook).group(1)
    assert [h["id"] for h in json.loads(run("webhooks", "list", "--json").stdout)] == [hook_id]
    assert rows(run("webhooks", "list").stdout)[0][0] == hook_id
    assert json.loads(run("webhooks", "deliveries", "--json").stdout) == []
    run("webhooks", "remove", hook_id)
    report = json.loads(run("data", "validate", str(EXAMPLE), "--json").stdout)
    assert report["n_examples"] == 10 and report["errors"] == []
    assert json.loads(run("usage", "--json").stdout)["data"] == []
    out = run(
        "train",
        "--model",
        "tuneforge-tiny",
        "--training-file",
        str(EXAMPLE),
        "--n-epochs",
        "1",
        "--output",
        str(tmp_path / "run"),
    )
    assert "succeeded" in out.stderr and (tmp_path / "run" / "final" / "tuneforge.json").is_file()


@pytest.mark.slow  # a job trains through a standalone worker
def test_server_commands(rt, tmp_path):
    run = rt["run"]
    # a missing key: a plain message and a usage exit status, not a traceback or "Invalid value"
    missing = run("files", "list", check=False)
    assert missing.returncode == 2 and "Invalid value" not in missing.stderr
    assert "no API key: set OPENAI_API_KEY or pass --api-key" in missing.stderr
    assert run("jobs", "list", check=False).returncode == 2

    server = start_server(
        rt["data_dir"], {"TUNEFORGE_WORKERS": "0"}, tuneforge=str(rt["script"]), base_env=rt["env"]
    )
    worker = None
    try:
        key = run("keys", "create", "--project", "default").stdout.splitlines()[-1]
        auth = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": key}

        def srv(*args: str, check: bool = True):
            return run(*args, check=check, env=auth)

        file_id = srv("files", "upload", str(EXAMPLE)).stdout.strip().splitlines()[-1]
        assert file_id.startswith("file-")
        assert [r[0] for r in rows(srv("files", "list").stdout)] == [file_id]
        assert json.loads(srv("files", "list", "--json").stdout)[0]["filename"] == "train.jsonl"
        assert json.loads(srv("files", "get", file_id, "--json").stdout)["id"] == file_id
        assert srv("files", "content", file_id).stdout.encode() == EXAMPLE.read_bytes()
        copy = srv("files", "upload", str(EXAMPLE), "--json")
        copy_id = json.loads(copy.stdout)["id"]
        srv("files", "content", copy_id, "-o", str(tmp_path / "copy.jsonl"))
        assert (tmp_path / "copy.jsonl").read_bytes() == EXAMPLE.read_bytes()
        assert "Deleted" in srv("files", "delete", copy_id).stdout

        job = json.loads(
            srv(
                "jobs",
                "create",
                "--model",
                "tuneforge-tiny",
                "--training-file",
                file_id,
                "--n-epochs",
                "2",
                "--suffix",
                "cli",
            ).stdout
        )
        other = json.loads(
            srv("jobs", "create", "--model", "tuneforge-tiny", "--training-file", file_id).stdout
        )
        # no worker yet: both wait; pausing a job that is not running is the API's 400
        paused = srv("jobs", "pause", other["id"], check=False)
        assert paused.returncode == 1 and "error 400" in paused.stderr
        assert srv("jobs", "resume", other["id"], check=False).returncode == 1
        assert json.loads(srv("jobs", "cancel", other["id"]).stdout)["status"] == "cancelled"
        listed = rows(srv("jobs", "list").stdout)
        assert {r[0] for r in listed} == {job["id"], other["id"]}  # whole ids, never cut
        assert len(json.loads(srv("jobs", "list", "--json").stdout)) == 2

        worker = subprocess.Popen(
            [str(rt["script"]), "worker"], env=rt["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        followed = srv("jobs", "follow", job["id"])
        assert "fine_tuned_model: ft:tuneforge-tiny:default:cli:" in followed.stdout
        # piped: messages are not broken at 80 columns, so the ids in them stay whole
        assert re.search(
            r"Snapshot ID: ft:tuneforge-tiny:default:cli:\w+:ckpt-step-\d+\n", followed.stdout
        ), followed.stdout
        done = json.loads(srv("jobs", "get", job["id"], "--json").stdout)
        assert done["status"] == "succeeded"
        events = json.loads(srv("jobs", "events", job["id"], "--json").stdout)
        assert any(e["message"] == "The job has successfully completed" for e in events)
        assert json.loads(run("usage", "--json").stdout)["totals"]["jobs"] == 1
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        server.stop()
        if server.proc.returncode not in (0, -15):
            print(server.log())


@pytest.mark.slow  # a DPO job trains through the server's worker
def test_jobs_create_dpo(rt, tmp_path):
    """`jobs create --method dpo --beta X`: the job echoes method dpo and beta, trains on
    preference pairs (DPO needs nothing beyond the runtime dependencies) and succeeds; a bad beta is
    a usage error or the server's 400 naming the field, and creates nothing."""
    run = rt["run"]
    help_text = run("jobs", "create", "--help").stdout
    assert "--method" in help_text and "--beta" in help_text and "dpo" in help_text
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        "".join(
            json.dumps(
                {
                    "input": {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}]},
                    "preferred_output": [{"role": "assistant", "content": f"It is {2 * i}."}],
                    "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
                }
            )
            + "\n"
            for i in range(10)
        )
    )
    data_dir = tmp_path / "data"
    server = start_server(
        data_dir,
        {"TUNEFORGE_WORKERS": "1", "TUNEFORGE_WORKER_POLL_SECONDS": "0.2"},
        tuneforge=str(rt["script"]),
        base_env=rt["env"],
    )
    try:
        key = run("keys", "create", "--project", "default", env={"TUNEFORGE_DATA_DIR": str(data_dir)})
        auth = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": key.stdout.splitlines()[-1]}

        def srv(*args: str, check: bool = True):
            return run(*args, check=check, env=auth)

        file_id = srv("files", "upload", str(prefs)).stdout.strip().splitlines()[-1]
        create = ("jobs", "create", "--model", "tuneforge-tiny", "--training-file", file_id)
        bad = srv(*create, "--method", "dpo", "--beta", "3", check=False)
        assert bad.returncode == 1 and "error 400" in bad.stderr
        assert "method.dpo.hyperparameters.beta" in bad.stderr
        # beta is DPO's: the supervised method refuses it by name
        sft = srv(*create, "--beta", "0.2", check=False)
        assert sft.returncode == 1 and "Unknown hyperparameter 'beta'" in sft.stderr
        typo = srv(*create, "--method", "dpo", "--beta", "high", check=False)
        assert typo.returncode == 2 and "--beta" in typo.stderr
        assert json.loads(srv("jobs", "list", "--json").stdout) == []  # nothing was created

        job = json.loads(
            srv(*create, "--method", "dpo", "--beta", "0.25", "--n-epochs", "1", "--batch-size", "5").stdout
        )
        requested = {"batch_size": 5, "beta": 0.25, "learning_rate_multiplier": "auto", "n_epochs": 1}
        assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"] == requested
        followed = srv("jobs", "follow", job["id"])
        assert "fine_tuned_model: ft:tuneforge-tiny:default:" in followed.stdout, followed.stdout
        done = json.loads(srv("jobs", "get", job["id"], "--json").stdout)
        assert done["status"] == "succeeded"
        assert done["method"]["dpo"]["hyperparameters"] == {**requested, "learning_rate_multiplier": 1.0}
    finally:
        server.stop()
        if server.proc.returncode not in (0, -15):
            print(server.log())
