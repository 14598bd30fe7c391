"""Usage accounting agrees with what the client was told: the prompt and completion tokens that
/v1/usage reports per model are the sums of the `usage` the SDK received (plain, streamed with
include_usage, and legacy completions), and another project's traffic is not in this project's
report."""

import time

import httpx
import pytest


@pytest.fixture(scope="module")
def served(server_factory):
    return server_factory({"TUNEFORGE_WORKERS": "0"})


def _usage(server, key: str) -> dict:
    r = httpx.get(
        f"{server.base_url}/usage",
        params={"group_by": "model"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    r.raise_for_status()
    return {b["model"]: b for b in r.json()["data"]}


def test_served_tokens_equal_the_usage_the_client_received(served) -> None:
    key, other_key = served.create_key("acct"), served.create_key("acct-other")
    client, other = served.client(key), served.client(other_key)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    want_prompt = want_completion = 0

    r = client.chat.completions.create(
        model="tuneforge-tiny", messages=msgs, max_tokens=7, n=2, seed=3, temperature=1
    )
    want_prompt += r.usage.prompt_tokens
    want_completion += r.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            model="tuneforge-tiny",
            messages=msgs,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    want_prompt += chunks[-1].usage.prompt_tokens
    want_completion += chunks[-1].usage.completion_tokens

    c = client.completions.create(model="tuneforge-tiny", prompt="Once upon a time", max_tokens=4)
    want_prompt += c.usage.prompt_tokens
    want_completion += c.usage.completion_tokens

    other.chat.completions.create(model="tuneforge-tiny", messages=msgs, max_tokens=3)

    deadline = time.monotonic() + 10  # usage rows are written just after each response ends
    while True:
        bucket = _usage(served, key).get("tuneforge-tiny")
        if (bucket and bucket["requests"] == 3) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert bucket is not None, "no usage recorded for tuneforge-tiny"
    assert bucket["requests"] == 3
    assert (bucket["prompt_tokens"], bucket["completion_tokens"]) == (want_prompt, want_completion)
    assert want_completion > 0
