"""Serving through a real `tuneforge serve` and the real openai SDK (strict response validation):
models list/retrieve/delete, chat (plain, streamed, n, stop, seed, max_tokens, logprobs, tools),
legacy completions, project scoping, checkpoints, concurrent requests to different adapters.

Fine-tuned models here are synthetic LoRA adapters of tuneforge-tiny (seeded random weights, so
each answers differently), registered the way jobs register them: a `fine_tuned_models` row.
`test_serving_trained.py` does the same with models really trained by jobs.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.helpers import register_fine_tune, wait_for
from tests.training.helpers import weather_call
from tuneforge.ids import new_id
from tuneforge.inference.synthetic import make_random_adapter
from tuneforge.store.db import make_engine, make_sessionmaker
from tuneforge.training.tiny import ensure_tiny_model

HI = [{"role": "user", "content": "Say something."}]
FT = "ft:tuneforge-tiny:default:{}:abcd1234"


@pytest.fixture(scope="module")
def env(server):
    """The server, a client of project `default`, and three registered fine-tunes (one of them a
    checkpoint). Returns (server, client, names, register)."""
    client = server.client()
    tiny = ensure_tiny_model(server.data_dir / "models")  # the same bytes the server builds
    factory = make_sessionmaker(make_engine(f"sqlite:///{server.data_dir / 'tuneforge.db'}"))

    def register(name: str, project: str, seed: int) -> str:
        path = make_random_adapter(tiny, server.data_dir / "adapters" / new_id("a", 8), seed=seed)
        register_fine_tune(
            factory,
            project=project,
            name=name,
            kind="lora",
            base_model=str(tiny),
            path=str(path),
            model="tuneforge-tiny",
        )
        return name

    names = [
        register(FT.format("one"), "default", 101),
        register(FT.format("two"), "default", 102),
        register(FT.format("one") + ":ckpt-step-10", "default", 103),
    ]
    return server, client, names, register


def chat(client, model, **kw):
    return client.chat.completions.create(model=model, messages=kw.pop("messages", HI), **kw)


def test_models_list_retrieve_and_owners(env):
    server, client, names, _ = env
    models = {m.id: m for m in client.models.list()}
    assert models["tuneforge-tiny"].owned_by == "system"
    for n in names:
        assert models[n].owned_by not in ("system", "") and models[n].created > 0
    got = client.models.retrieve(names[2])  # ids with ':' (and a checkpoint suffix)
    assert got.id == names[2] and got.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"
    # OpenAI's message, then the base models that exist (so a typo is easy to fix)
    assert info.value.body["message"] == (
        "The model `no-such-model` does not exist or you do not "
        "have access to it. Available base models: tuneforge-tiny."
    )


def test_chat_plain_streamed_n_and_usage(env):
    _, client, names, _ = env
    r = chat(client, names[0], temperature=0, max_tokens=20)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and r.model == names[0] and text
    assert (
        r.usage.completion_tokens <= 20
        and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    )
    again = chat(client, names[0], temperature=0, max_tokens=20).choices[0].message.content
    assert again == text  # greedy is deterministic

    chunks = list(
        chat(
            client,
            names[0],
            temperature=0,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == r.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens

    two = chat(client, names[0], n=2, temperature=1.0, seed=5, max_tokens=12)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content != two.choices[1].message.content


def test_base_model_and_other_models_answer_differently(env):
    _, client, names, _ = env
    answers = [
        chat(client, m, temperature=0, max_tokens=16).choices[0].message.content
        for m in ["tuneforge-tiny", *names]
    ]
    assert len(set(answers)) == 4  # base, two fine-tunes and a checkpoint: four different models


def test_seed_max_tokens_and_stop(env):
    _, client, names, _ = env
    a = chat(client, names[1], temperature=1.0, seed=42, max_tokens=16).choices[0].message.content
    b = chat(client, names[1], temperature=1.0, seed=42, max_tokens=16).choices[0].message.content
    c = chat(client, names[1], temperature=1.0, seed=43, max_tokens=16).choices[0].message.content
    assert a == b and a != c
    r = chat(client, names[1], temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    r = chat(client, names[1], temperature=0, max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    full = chat(client, names[1], temperature=0, max_tokens=24).choices[0].message.content
    stop = next(full[i : i + 3] for i in range(4, len(full)) if full[i : i + 3].isalpha())
    r = chat(client, names[1], temperature=0, max_tokens=24, stop=[stop, "\u2603never"])
    assert r.choices[0].message.content == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_logprobs_roles_parts_and_ignored_fields(env):
    _, client, names, _ = env
    r = chat(
        client,
        names[0],
        temperature=0,
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            *weather_call(result="22 C"),
        ],
        response_format={"type": "text"},
        user="u1",
        metadata={"a": "b"},
        store=False,
        tool_choice="auto",
        service_tier="auto",
    )
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in lp)


@pytest.mark.parametrize(
    "kw,param",
    [
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 5000}, "messages"),
    ],
)
def test_invalid_values_are_400_with_param(env, kw, param):
    _, client, names, _ = env
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, names[0], **kw)
    assert info.value.param == param


def test_legacy_completions(env):
    server, client, names, _ = env
    r = client.completions.create(model="tuneforge-tiny", prompt="The answer is", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")
    text = r.choices[0].text
    # Streamed legacy chunks carry finish_reason null until the last one, as OpenAI's do; the
    # SDK's strict mode types it as non-null, so this one call reads the stream unvalidated.
    loose = openai.OpenAI(base_url=server.base_url, api_key=client.api_key, max_retries=0)
    streamed = list(
        loose.completions.create(
            model="tuneforge-tiny", prompt="The answer is", max_tokens=6, temperature=0, stream=True
        )
    )
    assert streamed[-1].choices[0].finish_reason == r.choices[0].finish_reason
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text
    r = client.completions.create(
        model=names[0], prompt=["a", "b"], n=2, max_tokens=3, temperature=0, echo=True, logprobs=1
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text.startswith("a") and r.choices[2].text.startswith("b")
    assert r.choices[0].logprobs.tokens


def test_concurrent_requests_to_different_adapters_get_their_own_answers(env):
    _, client, names, _ = env
    models = ["tuneforge-tiny", *names]
    alone = {m: chat(client, m, temperature=0, max_tokens=16).choices[0].message.content for m in models}
    with cf.ThreadPoolExecutor(16) as pool:
        futures = [(m, pool.submit(chat, client, m, temperature=0, max_tokens=16)) for m in models * 4]
        for m, f in futures:
            assert f.result().choices[0].message.content == alone[m]


def test_another_projects_model_is_not_found(env):
    server, client, names, register = env
    other_key = server.create_key("other")
    theirs = register(FT.format("theirs"), "other", 201)
    assert server.client(other_key).models.retrieve(theirs).id == theirs
    for call in (
        lambda: client.models.retrieve(theirs),
        lambda: chat(client, theirs),
        lambda: client.models.delete(theirs),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.code == "model_not_found"
    assert names[0] not in {m.id for m in server.client(other_key).models.list()}


def test_delete_then_404_and_base_models_cannot_be_deleted(env):
    server, client, _, register = env
    name = register(FT.format("doomed"), "default", 301)
    before = chat(client, name, temperature=0, max_tokens=8).choices[0].message.content
    gone = client.models.delete(name)
    assert (gone.id, gone.deleted) == (name, True)
    for call in (lambda: chat(client, name), lambda: client.models.retrieve(name)):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.code == "model_not_found"
    assert name not in {m.id for m in client.models.list()}
    # The name reused for a different model: it answers as the new one, never the old adapter.
    register(name, "default", 302)
    assert chat(client, name, temperature=0, max_tokens=8).choices[0].message.content != before
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("tuneforge-tiny")


def _engine_metric(server, name: str, label: str = "") -> int:
    """A serving metric of the server's engine, summed over the series whose labels contain
    `label` (GET /metrics)."""
    text = httpx.get(f"{server.root_url}/metrics", timeout=10).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and label in line
        )
    )


def _in_engine(server, state: str = "") -> int:
    return _engine_metric(server, "tuneforge_inference_sequences", state)


# tuneforge-tiny, greedy: this prompt runs to max_tokens (checked below with a short max_tokens),
# so a sequence that outlived its client would generate all 1900 tokens.
LONG = {"model": "tuneforge-tiny", "max_tokens": 1900, "temperature": 0}


@pytest.mark.parametrize(
    "path,body",
    [
        ("/chat/completions", {"messages": HI}),
        ("/chat/completions", {"messages": HI, "stream": True}),
        ("/completions", {"prompt": "Say something."}),
    ],
    ids=["chat", "chat-stream", "completions"],
)
def test_client_that_leaves_stops_its_generation(env, path, body):
    server, client, _, _ = env
    wait_for(lambda: _in_engine(server) == 0, 30, "the engine to be quiet before we start", every=0.05)
    before = _engine_metric(server, "tuneforge_inference_generated_tokens_total")
    payload = json.dumps({**LONG, **body}).encode()
    url = urlsplit(server.base_url)
    sock = socket.create_connection((url.hostname, url.port))  # raw, so we decide when it closes
    sock.sendall(
        b"POST /v1" + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer "
        + client.api_key.encode()
        + b"\r\nContent-Length: "
        + str(len(payload)).encode()
        + b"\r\n\r\n"
        + payload
    )
    try:
        # Running, not only waiting: the first request also waits for the model to load.
        wait_for(
            lambda: _in_engine(server, 'state="running"') == 1,
            60,
            "the engine to start the request",
            every=0.05,
        )
        time.sleep(0.3)
        assert _in_engine(server, 'state="running"') == 1  # still generating when the client leaves
    finally:
        sock.close()
    wait_for(
        lambda: _in_engine(server) == 0, 30, "the engine to stop generating after the client left", every=0.05
    )
    spent = _engine_metric(server, "tuneforge_inference_generated_tokens_total") - before
    # Speed-independent: had the sequence outlived its client it would have run to max_tokens.
    assert 0 < spent < LONG["max_tokens"], f"{spent} tokens generated for a client that had left"
    # The same request, answered: it does run to max_tokens (so stopping early above was the
    # disconnect, not the model choosing to stop), and the server is still responsive.
    short = {**json.loads(payload), "max_tokens": spent + 50, "stream": False}
    r = httpx.post(
        server.base_url + path, json=short, timeout=60, headers={"Authorization": f"Bearer {client.api_key}"}
    ).json()
    assert r["choices"][0]["finish_reason"] == "length"
