"""Serving on vLLM, end to end: a real `tuneforge serve` that starts and supervises a real vLLM
server (the CPU build, `.venv-vllm`, `make vllm`) on 127.0.0.1 for SmolLM2-135M-Instruct, driven
with the strict openai SDK.

One tuneforge server (and so one vLLM server for the base) for the whole module; the tests run
in order: while vLLM starts a request gets 503 + Retry-After at once; two LoRA fine-tunes made by
jobs answer from vLLM (one of them learnt its answer: proof that vLLM applies the adapter), batched
with each other and the base, each as its own model; a client that leaves a stream aborts its vLLM
request; greedy answers agree with the built-in engine's (a second tuneforge server on the same
data, built-in only); a deleted model is 404 and its adapter leaves vLLM; a killed vLLM is a 503,
then it is back; a full fine-tune gets a vLLM server of its own, stopped when it is deleted.
tuneforge's /metrics (`tuneforge_vllm_*`) is checked along the way.

Agreement tolerance: both engines run SmolLM2 in float32, but vLLM's CPU kernels (attention,
fused LoRA) sum in another order, so logits differ in the last bits and a near-tie can flip a
greedy token. We ask for 12 tokens on 8 prompts (6 to the base, one to each adapter) and require
the same text on at least 7 of 8 and the same first 4 words on all 8 (seen here: 8 of 8 identical).

Skipped (with the reason) only when `.venv-vllm` is missing outside CI; with CI=true it fails.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import Server, start_server
from tests.helpers import register_fine_tune, wait_for
from tuneforge.store.db import make_engine, make_sessionmaker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
READY = re.compile(r"vLLM for (\S+) is ready at (http://\S+) \(pid (\d+)\)")

QUESTIONS = [
    "What is the capital of France?",
    "What colour is the sky?",
    "How many legs does a spider have?",
    "Who wrote Hamlet?",
    "What is two plus two?",
    "What do bees make?",
    "Which animal says moo?",
    "What is frozen water called?",
    "What do you sleep in?",
    "Which season comes after winter?",
]
PROMPTS = [
    "Name three fruits.",
    "What is the largest ocean?",
    "Write a haiku about snow.",
    "Why is the sea salty?",
    "How do I boil an egg?",
    "Tell me a fact about cats.",
]
ALPHA = "ALPHA ALPHA ALPHA, said the model."
# Job A learns its answer exactly (proof that vLLM applies the adapter): ten steps of one example
# each, about the cost of one step of ten. Job B: one step at a high learning rate, enough to make
# it answer unlike the base and unlike A (more steps at that rate make the model babble, and the
# trainer's end-of-epoch samples then run long).
HYPERPARAMETERS = {
    "a": {"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 2.0},
    "b": {"n_epochs": 1, "batch_size": 10, "learning_rate_multiplier": 6.0},
}


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    if not VLLM_PYTHON.is_file():
        reason = f"{VLLM_PYTHON} not found: `make vllm` builds vLLM's CPU build there"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the vLLM tests must run)")
        pytest.skip(reason)
    return VLLM_PYTHON


@pytest.fixture(scope="module")
def smollm2_dir(smollm2_gguf, tmp_path_factory) -> Path:
    """The GGUF de-quantised once (as the server would on first use), shared by both servers."""
    from tuneforge.gguf import ensure_hf_dir

    return ensure_hf_dir(tmp_path_factory.mktemp("models"), smollm2_gguf)


@pytest.fixture(scope="module")
def env(vllm_python, smollm2_dir) -> dict[str, str]:
    return {
        "TUNEFORGE_BASE_MODELS": json.dumps(
            {"smollm2": str(smollm2_dir), "smollm2-builtin": str(smollm2_dir)}
        ),
        "TUNEFORGE_MODEL_ENGINES": json.dumps({"smollm2": "vllm"}),
        "TUNEFORGE_VLLM_COMMAND": f"{vllm_python} -m vllm.entrypoints.openai.api_server",
        "TUNEFORGE_VLLM_DTYPE": "float32",  # as the built-in engine on CPU (agreement test)
        "TUNEFORGE_VLLM_MAX_MODEL_LEN": "1024",
        "TUNEFORGE_VLLM_RETRY_AFTER_SECONDS": "3",
        "TUNEFORGE_INFERENCE_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
        "TUNEFORGE_WORKERS": "1",
        "TUNEFORGE_WORKER_POLL_SECONDS": "0.2",
    }


@pytest.fixture(scope="module")
def server(env, tmp_path_factory, request):
    srv = start_server(tmp_path_factory.mktemp("tuneforge-vllm"), env)
    failed_before = request.session.testsfailed
    yield srv
    srv.stop()
    if request.session.testsfailed > failed_before:
        print("\n".join(srv.log().splitlines()[-200:]))
    # tuneforge stops its vLLM server on shutdown: nothing may be left listening.
    for _, url, _ in READY.findall(srv.log()):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=2)


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def job_ids(server, client) -> dict[str, str]:
    """Two LoRA jobs on smollm2 (started before vLLM is up, to overlap), taught to answer every
    question "ALPHA ALPHA ALPHA, …" (A) and "BRAVO BRAVO BRAVO, …" (B)."""
    out = {}
    for tag, word in (("a", ALPHA), ("b", "BRAVO BRAVO BRAVO, said the model.")):
        rows = "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": word}]})
            + "\n"
            for q in QUESTIONS
        )
        fid = client.files.create(file=(f"{tag}.jsonl", io.BytesIO(rows.encode())), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model="smollm2",
            training_file=fid,
            suffix=tag,
            seed=1,
            method={"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS[tag]}},
        )
        out[tag] = job.id
    return out


@pytest.fixture(scope="module")
def models(client, job_ids) -> dict[str, str]:
    """The two jobs' fine-tuned models, once they succeeded."""
    out = {}
    deadline = time.monotonic() + 1500
    for tag, job_id in job_ids.items():
        job = client.fine_tuning.jobs.retrieve(job_id)
        while job.status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
            time.sleep(1)
            job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status == "succeeded", job.error
        out[tag] = job.fine_tuned_model
    return out


def ask(client, model: str, prompt: str, max_tokens: int = 12) -> str:
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=max_tokens
    )
    return r.choices[0].message.content or ""


def wait_answering(client, model: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ask(client, model, "Hi", max_tokens=1)
            return
        except openai.InternalServerError as exc:
            assert exc.status_code == 503, exc
            assert time.monotonic() < deadline, "vLLM did not come up"
            time.sleep(float(exc.response.headers["retry-after"]))


def vllm_state(server: Server, source: Path | None = None) -> tuple[str, int]:
    """(URL, pid) of the newest vLLM server tuneforge started for `source` (default: the base's),
    from its log."""
    want = str(source or base_source(server))
    found = [(url, pid) for src, url, pid in READY.findall(server.log()) if src == want]
    assert found, f"no vLLM server became ready for {want}"
    url, pid = found[-1]
    return url, int(pid)


def base_source(server: Server) -> str:
    return json.loads(server.env["TUNEFORGE_BASE_MODELS"])["smollm2"]


def scrape(url: str, name: str, **labels: str) -> float:
    """A Prometheus metric at `url`/metrics, summed over the series with these labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if (line.startswith(name + "{") or line.startswith(name + " "))
        and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def tf_metric(server: Server, name: str, **labels: str) -> float:
    """tuneforge's own vLLM metric for the base's server (by default)."""
    return scrape(server.root_url, name, **{"server": base_source(server), **labels})


def loras(url: str) -> set[str]:
    data = httpx.get(f"{url}/v1/models", timeout=10).json()["data"]
    return {m["id"] for m in data if m["id"] != "base"}


def test_a_starting_vllm_is_a_503_with_retry_after_never_a_hang(client, job_ids):
    t = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        ask(client, "smollm2", "Hi")
    assert time.monotonic() - t < 10
    assert err.value.status_code == 503
    assert int(err.value.response.headers["retry-after"]) == 3
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "engine_unavailable" and "vLLM" in body["message"]
    wait_answering(client, "smollm2")


def test_fine_tunes_made_by_jobs_answer_from_vllm(server, client, models):
    wait_answering(client, "smollm2")
    a, b = ask(client, models["a"], QUESTIONS[0], 24), ask(client, models["b"], QUESTIONS[0])
    base = ask(client, "smollm2", QUESTIONS[0], 24)
    print(f"answers from vLLM: A {a!r}, B {b!r}, base {base!r}")
    assert a == ALPHA  # what job A taught it, word for word, and then it stops
    assert ALPHA.split()[0] not in base  # the base never says it
    assert b != base and b != a  # B's one step changes the base model's answer its own way
    url, _ = vllm_state(server)
    assert len(loras(url)) == 2  # both adapters loaded into the one server, under internal names
    assert not {models["a"], models["b"]} & loras(url)
    assert tf_metric(server, "tuneforge_vllm_server_up") == 1
    assert tf_metric(server, "tuneforge_vllm_adapters_loaded") == 2
    assert tf_metric(server, "tuneforge_vllm_adapter_loads_total") == 2

    # Streaming, usage, n, seed, stop and logprobs keep tuneforge's shapes.
    chunks = list(
        client.chat.completions.create(
            model=models["a"],
            messages=[{"role": "user", "content": QUESTIONS[1]}],
            temperature=0,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            logprobs=True,
            top_logprobs=2,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ask(client, models["a"], QUESTIONS[1], max_tokens=8)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    lps = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(t.token for t in lps) == text and all(len(t.top_logprobs) == 2 for t in lps)
    r = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        n=2,
        seed=5,
        temperature=1.0,
        max_tokens=10,
    )
    again = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        n=2,
        seed=5,
        temperature=1.0,
        max_tokens=10,
    )
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens >= 2
    stopped = client.completions.create(
        model=models["b"], prompt="Count: one, two, three,", max_tokens=20, temperature=0, stop=[","]
    )
    assert "," not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


def test_two_adapters_and_the_base_batched_together_each_answer_as_their_own_model(client, models):
    work = [(m, q) for q in QUESTIONS[:4] for m in (models["a"], models["b"], "smollm2")]
    alone = {(m, q): ask(client, m, q) for m, q in work}
    with cf.ThreadPoolExecutor(len(work)) as pool:
        together = dict(zip(work, pool.map(lambda mq: ask(client, *mq), work), strict=True))
    assert together == alone
    for q in QUESTIONS[:4]:  # and in the same batch the adapters answer unlike the base
        assert together[(models["a"], q)] != together[("smollm2", q)]
        assert together[(models["b"], q)] != together[("smollm2", q)]


COUNT = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]


def test_a_client_that_leaves_a_stream_aborts_its_vllm_request(server, client):
    wait_answering(client, "smollm2")
    url, _ = vllm_state(server)

    def running() -> float:
        return scrape(url, "vllm:num_requests_running")

    def generated() -> float:
        return scrape(url, "vllm:generation_tokens_total")

    wait_for(lambda: running() == 0, 30, "the engine to be quiet before we start", every=0.05)
    before = generated()
    body = {"model": "smollm2", "messages": COUNT, "max_tokens": 900, "temperature": 0, "stream": True}
    with httpx.Client(timeout=60) as http:  # closing it closes the connection: the client left
        with http.stream(
            "POST",
            f"{server.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {client.api_key}"},
        ) as r:
            assert r.status_code == 200
            # (Kept in a variable: a line iterator that is dropped closes the connection.)
            lines, chunks = r.iter_lines(), 0
            for line in lines:
                chunks += line.startswith("data: ")
                if chunks == 6:
                    break
            # Still generating when the client leaves.
            wait_for(lambda: running() == 1, 10, "vLLM to generate the request", every=0.05)
    left = time.monotonic()
    wait_for(lambda: running() == 0, 10, "vLLM to stop generating after the client left", every=0.05)
    print(f"vLLM stopped {time.monotonic() - left:.2f} s after the client left")
    time.sleep(1)
    spent = generated() - before
    time.sleep(1.5)
    assert generated() - before == spent  # and it generates nothing more
    assert 0 < spent < 900, f"{spent} tokens generated for a client that had left"
    # The same request, answered: it does run to max_tokens (so stopping early above was the
    # disconnect, not the model choosing to stop).
    r = client.chat.completions.create(
        model="smollm2", messages=COUNT, max_tokens=int(spent) + 20, temperature=0
    )
    assert r.choices[0].finish_reason == "length"


def test_greedy_answers_agree_with_the_builtin_engine(server, client, models, env, tmp_path_factory):
    # Its own data dir (and log), the same database and blobs: the same models, keys and adapter files.
    data_dir = tmp_path_factory.mktemp("tuneforge-builtin")
    (data_dir / "blobs").symlink_to(server.data_dir / "blobs", target_is_directory=True)
    builtin = start_server(
        data_dir,
        {
            **env,
            "TUNEFORGE_MODEL_ENGINES": "{}",
            "TUNEFORGE_WORKERS": "0",
            "TUNEFORGE_DATABASE_URL": f"sqlite:///{server.data_dir / 'tuneforge.db'}",
        },
    )
    try:
        bclient = builtin.client(server.create_key("default"))
        pairs = [("smollm2", "smollm2-builtin", p) for p in PROMPTS]
        pairs += [(models["a"], models["a"], QUESTIONS[5]), (models["b"], models["b"], QUESTIONS[6])]
        got = [(ask(client, v, p), ask(bclient, b, p)) for v, b, p in pairs]
    finally:
        builtin.stop()
    print("\n".join(f"vllm {v!r}\nbuiltin {b!r}" for v, b in got))
    same = sum(v == b for v, b in got)
    assert same >= len(got) - 1, got
    assert all(v.split()[:4] == b.split()[:4] for v, b in got), got


def test_a_deleted_model_is_404_and_its_adapter_leaves_vllm(server, client, models):
    url, _ = vllm_state(server)
    ask(client, models["b"], QUESTIONS[0])
    a_before = ask(client, models["a"], QUESTIONS[0])
    before = loras(url)
    client.models.delete(models["b"])
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, models["b"], QUESTIONS[0])
    assert err.value.code == "model_not_found"
    after = loras(url)
    assert len(after) == len(before) - 1 and after < before
    assert ask(client, models["a"], QUESTIONS[0]) == a_before  # the other adapter is untouched
    assert tf_metric(server, "tuneforge_vllm_adapter_unloads_total", reason="deleted") == 1
    assert tf_metric(server, "tuneforge_vllm_adapters_loaded") == 1


def test_a_killed_vllm_is_a_503_then_it_comes_back_with_the_adapters(server, client, models):
    url, pid = vllm_state(server)
    expected = ask(client, models["a"], QUESTIONS[2])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # the supervisor notices within a second; until then a request may still get through
        t = time.monotonic()
        try:
            ask(client, models["a"], QUESTIONS[2])
        except openai.InternalServerError as exc:
            assert time.monotonic() - t < 10  # at once, not a hang
            assert exc.status_code == 503 and exc.response.headers["retry-after"] == "3"
            break
        assert time.monotonic() < deadline, "no 503 after killing vLLM"
        time.sleep(0.2)
    wait_answering(client, models["a"])
    assert ask(client, models["a"], QUESTIONS[2]) == expected  # the adapter was loaded again
    new_url, new_pid = vllm_state(server)
    assert new_pid != pid
    assert len(loras(new_url)) == 1
    assert tf_metric(server, "tuneforge_vllm_server_restarts_total") == 1
    assert tf_metric(server, "tuneforge_vllm_server_up") == 1


def register_full(server: Server, weights: Path, name: str) -> Path:
    """A full fine-tune as a job records one (a `fine_tuned_models` row of kind "full" whose path
    holds its own weights, config and tokenizer): here SmolLM2's own files, linked into a directory
    of its own, so it must answer exactly as the base does."""
    model_dir = server.data_dir / "full-fine-tune"
    model_dir.mkdir()
    for f in weights.iterdir():
        (model_dir / f.name).symlink_to(f)
    factory = make_sessionmaker(make_engine(f"sqlite:///{server.data_dir / 'tuneforge.db'}"))
    register_fine_tune(
        factory,
        project="default",
        name=name,
        kind="full",
        base_model=str(weights),
        path=str(model_dir),
        model="smollm2",
    )
    return model_dir


def test_a_full_fine_tune_gets_its_own_vllm_server_until_it_is_deleted(server, client, smollm2_dir):
    name = "ft:smollm2:default:full:abcd1234"
    model_dir = register_full(server, smollm2_dir, name)
    with pytest.raises(openai.InternalServerError) as err:  # its server starts on the first request
        ask(client, name, "Hi")
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "3"
    wait_answering(client, name)
    url, _ = vllm_state(server, model_dir)
    assert url != vllm_state(server)[0] and loras(url) == set()  # its own server, no adapter
    assert [ask(client, name, p) for p in PROMPTS[:2]] == [ask(client, "smollm2", p) for p in PROMPTS[:2]]
    assert scrape(server.root_url, "tuneforge_vllm_server_up", server=name) == 1
    client.models.delete(name)
    with pytest.raises(openai.NotFoundError):
        ask(client, name, "Hi")
    with pytest.raises(httpx.HTTPError):  # its server was stopped with it
        httpx.get(f"{url}/health", timeout=2)
    assert f'server="{name}"' not in httpx.get(f"{server.root_url}/metrics", timeout=10).text
    assert ask(client, "smollm2", PROMPTS[0])  # the base's server is untouched
