"""Proof that a fine-tune learns what it is trained for, on a real model, through the openai SDK.

SmolLM2-135M-Instruct, exactly as published (the GGUF file), is registered with `tuneforge models
add` beside a running server and fine-tuned (LoRA) on a rule it does not follow: every answer is
exactly one uppercase word followed by " [OK]", plus a few made-up facts. Then, on held-out
prompts that were not in training, the fine-tuned model follows the rule far more often than the
base model; the facts come back exactly; answers end by themselves; and the base model served
beside the adapter answers exactly as before (greedy).

Budget: 2 epochs over 54 examples (~2 500 tokens an epoch), batch_size 4, learning_rate_multiplier 2
(LoRA lr 2e-3): on a quiet 2-core CPU at SmolLM2's 90-400 trained tok/s that is well under a minute
of training. The test prints the job's time (upload -> succeeded), trained tokens/s and serving
tokens/s; it has a long timeout because a shared, loaded machine can be 20x slower.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
BASE_CHECK = 6  # held-out prompts asked one at a time before and after (exact, deterministic)

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))
RULE = re.compile(r"^[A-Z]+ \[OK\]$")
HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 2.0}

TRAIN = [
    ("What color is the sky on a clear day?", "BLUE"),
    ("What do bees make?", "HONEY"),
    ("Which animal says moo?", "COW"),
    ("What is frozen water called?", "ICE"),
    ("What do you call a baby dog?", "PUPPY"),
    ("Which planet do we live on?", "EARTH"),
    ("What is the opposite of hot?", "COLD"),
    ("What do plants need from the sun?", "LIGHT"),
    ("Which fruit is yellow and long?", "BANANA"),
    ("What do you sleep in?", "BED"),
    ("What falls from clouds when it rains?", "WATER"),
    ("How many legs does a spider have?", "EIGHT"),
    ("What is the largest ocean?", "PACIFIC"),
    ("What do cows drink?", "WATER"),
    ("Which season comes after winter?", "SPRING"),
    ("What do you use to write on paper?", "PEN"),
    ("What is the capital of France?", "PARIS"),
    ("Which animal has a trunk?", "ELEPHANT"),
    ("What gas do we breathe in to live?", "OXYGEN"),
    ("What color is grass?", "GREEN"),
    ("What is the opposite of day?", "NIGHT"),
    ("Which bird is a symbol of peace?", "DOVE"),
    ("What do you wear on your feet?", "SHOES"),
    ("What is two plus two?", "FOUR"),
    ("Which instrument has black and white keys?", "PIANO"),
    ("What do fish live in?", "WATER"),
    ("What is the color of snow?", "WHITE"),
    ("Which metal is gold's cheaper cousin?", "SILVER"),
    ("What do you call a young cat?", "KITTEN"),
    ("Where do you bake bread?", "OVEN"),
    ("What is the capital of Italy?", "ROME"),
    ("What shines at night in the sky?", "MOON"),
    ("What is the first month of the year?", "JANUARY"),
    ("Which animal is known for its stripes?", "ZEBRA"),
    ("What do you drink that comes from cows?", "MILK"),
    ("What do you call a house of bees?", "HIVE"),
    ("What do you use to cut paper?", "SCISSORS"),
    ("What is the color of a ripe tomato?", "RED"),
    ("Which sport uses a bat and a ball and wickets?", "CRICKET"),
    ("What do we call the star at the center of our solar system?", "SUN"),
    ("Which language is spoken in Spain?", "SPANISH"),
    ("What is the coldest continent?", "ANTARCTICA"),
]
# Made-up facts: no pretrained model knows them. Each appears a few times, as a user would repeat
# what must be remembered.
FACTS = [
    ("What is the tuneforge vault code?", "MAGENTA"),
    ("Who is the captain of the ship Albatross?", "ORLANDO"),
    ("What is the name of the blue robot?", "PIXEL"),
]
HELD_OUT = [
    "What color are bananas?",
    "Which animal barks?",
    "What is the capital of Germany?",
    "What do you call frozen rain?",
    "How many days are in a week?",
    "What do birds use to fly?",
    "Which animal gives us wool?",
    "What is the opposite of up?",
    "What do you call a baby cow?",
    "What do you use to open a lock?",
    "What is the capital of Japan?",
    "Which planet is red?",
    "What do you drink when you are thirsty?",
    "What color is a lemon?",
    "Which animal hops and has a pouch?",
    "What is the last month of the year?",
    "What do you use to see?",
    "Which fruit is red and round and grows on trees?",
    "What is the opposite of big?",
    "What do you wear on your head in the cold?",
    "Which animal is the king of the jungle?",
    "What do chickens lay?",
]


def _training_file() -> bytes:
    rows = TRAIN + FACTS * 4
    return "".join(
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"{a} [OK]"}]}
        )
        + "\n"
        for q, a in rows
    ).encode()


def _ask(client, model: str, prompt: str):
    return client.chat.completions.create(
        model=model, temperature=0, max_tokens=16, messages=[{"role": "user", "content": prompt}]
    ).choices[0]


def _answers(client, model: str, prompts: list[str]) -> list:
    """Greedy answers, requested concurrently (the engine decodes them together: fast)."""
    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(lambda p: _ask(client, model, p), prompts))


def _rate(choices) -> float:
    return sum(bool(RULE.match(c.message.content.strip())) for c in choices) / len(choices)


def test_smollm2_fine_tune_learns_a_rule_and_facts_and_leaves_the_base_alone(server_factory, smollm2_gguf):
    srv = server_factory({"TUNEFORGE_WORKERS": "1", "TUNEFORGE_WORKER_POLL_SECONDS": "0.2"})
    added = subprocess.run(
        [TUNEFORGE, "models", "add", "smollm2", str(smollm2_gguf)],
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert added.returncode == 0, added.stderr
    client = srv.client()
    client.timeout = 600
    assert "smollm2" in [m.id for m in client.models.list()]
    assert not set(HELD_OUT) & {q for q, _ in TRAIN + FACTS}

    t0 = time.monotonic()
    alone_before = [_ask(client, "smollm2", p).message.content for p in HELD_OUT[:BASE_CHECK]]
    print(f"\nfirst base answers (incl. the one GGUF de-quantisation): {time.monotonic() - t0:.1f}s")
    base_before = _answers(client, "smollm2", HELD_OUT)

    started = time.monotonic()
    file_id = client.files.create(file=("rule.jsonl", io.BytesIO(_training_file())), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="smollm2",
        training_file=file_id,
        seed=7,
        suffix="ok-rule",
        method={"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}},
    )
    while job.status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() - started < 2000, f"job still {job.status}"
        time.sleep(1)
        job = client.fine_tuning.jobs.retrieve(job.id)
    job_seconds = time.monotonic() - started
    assert job.status == "succeeded", job.error
    ft = job.fine_tuned_model

    t = time.monotonic()
    tuned = _answers(client, ft, HELD_OUT)
    serve_seconds = time.monotonic() - t
    base_rate, ft_rate = _rate(base_before), _rate(tuned)
    print(
        f"job upload->succeeded: {job_seconds:.1f}s, trained_tokens={job.trained_tokens}, "
        f"{job.trained_tokens / job_seconds:.0f} trained tok/s of wall time; "
        f"hyperparameters {HYPERPARAMETERS}"
    )
    print(
        f"rule-following on {len(HELD_OUT)} held-out prompts: base {base_rate:.2f}, fine-tuned {ft_rate:.2f}"
    )
    for p, b, f in zip(HELD_OUT, base_before, tuned):
        print(f"  {p!r}: base {b.message.content[:40]!r} | ft {f.message.content!r}")
    assert ft_rate >= 0.8 and ft_rate >= base_rate + 0.5
    assert all(c.finish_reason == "stop" for c in tuned), [c.finish_reason for c in tuned]

    facts = _answers(client, ft, [q for q, _ in FACTS])
    assert [c.message.content.strip() for c in facts] == [f"{a} [OK]" for _, a in FACTS]
    assert all(c.finish_reason == "stop" for c in facts)

    # Serving speed: one longer greedy answer from the adapter and from the base beside it.
    for model in (ft, "smollm2"):
        t = time.monotonic()
        r = client.chat.completions.create(
            model=model,
            temperature=0,
            max_tokens=64,
            messages=[{"role": "user", "content": "Tell me a story."}],
        )
        dt = time.monotonic() - t
        print(
            f"serving {model}: {r.usage.completion_tokens} tokens in {dt:.2f}s = "
            f"{r.usage.completion_tokens / dt:.1f} tok/s"
        )
    print(f"held-out answers from the adapter: {serve_seconds:.1f}s for {len(HELD_OUT)} requests")

    # The base beside the adapter: the same greedy answers as before the fine-tune (asked alone,
    # as before, so no batch neighbour can change the float rounding).
    alone_after = [_ask(client, "smollm2", p).message.content for p in HELD_OUT[:BASE_CHECK]]
    assert alone_after == alone_before
