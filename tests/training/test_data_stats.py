"""Token statistics with the tiny model's tokenizer: every figure checked against the trainer's own
rendering (`render_example`), computed independently here."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from tests.training.helpers import WEATHER_TOOL, weather_call, write_jsonl
from tuneforge.training.data import validate_file
from tuneforge.training.render import IGNORE_INDEX, render_example

FIXED = [
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "How many legs does a spider have?"},
            {"role": "assistant", "content": "Eight.", "weight": 0},
            {"role": "user", "content": "Say it as a sentence."},
            {"role": "assistant", "content": "A spider has eight legs."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            *weather_call(),
            {"role": "assistant", "content": "It is 22 degrees in Paris."},
        ],
        "tools": [WEATHER_TOOL],
    },
    {
        "messages": [
            {"role": "developer", "content": "Answer in one word."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Colour of the "}, {"type": "text", "text": "sky?"}],
            },
            {"role": "assistant", "content": "Blue."},
        ]
    },
] + [
    {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}? " * (1 + i % 4)},
            {"role": "assistant", "content": f"{i} plus {i} is {2 * i}. " * (1 + i % 3)},
        ]
    }
    for i in range(10)
]


def _expected(tokenizer, examples):
    totals, trained = [], []
    for e in examples:
        r = render_example(tokenizer, e)
        totals.append(len(r.input_ids))
        trained.append(sum(1 for x in r.labels if x != IGNORE_INDEX))
    return totals, trained


def _check_distribution(d, values) -> None:
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    assert d.min == min(values) and d.max == max(values)
    assert d.mean == pytest.approx(statistics.fmean(values))
    assert d.median == pytest.approx(statistics.median(values))
    assert d.p10 == pytest.approx(deciles[0]) and d.p90 == pytest.approx(deciles[-1])


def test_token_statistics_match_the_trainers_rendering(tmp_path: Path, tiny_tokenizer) -> None:
    path = write_jsonl(tmp_path / "fixed.jsonl", FIXED)
    totals, trained = _expected(tiny_tokenizer, FIXED)
    limit = sorted(totals)[-3]  # the two longest examples go over it
    report = validate_file(path, tokenizer=tiny_tokenizer, max_seq_len=limit, price_per_million_tokens=8.0)
    assert report.ok, report.errors
    assert report.n_examples == 14
    _check_distribution(report.total_tokens_per_example, totals)
    _check_distribution(report.trained_tokens_per_example, trained)
    _check_distribution(report.messages_per_example, [len(e["messages"]) for e in FIXED])
    assert report.n_too_long == sum(t > limit for t in totals) == 2
    assert any("2 example(s) are longer than the context limit" in w for w in report.warnings)
    assert report.billing_tokens == sum(min(t, limit) for t in totals)
    assert report.n_epochs == 7  # 100 // 14
    assert report.estimated_trained_tokens == report.billing_tokens * 7
    assert report.estimated_cost == pytest.approx(report.billing_tokens * 7 * 8.0 / 1e6)
    assert report.n_missing_system == 12 and report.n_missing_user == 0
    # weight 0 really is left out of the trained count: the turn's tokens are not in the labels
    all_weighted = copy.deepcopy(FIXED[1])
    del all_weighted["messages"][1]["weight"]
    assert trained[1] < _expected(tiny_tokenizer, [all_weighted])[1][0]
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d


def test_default_context_limit_is_the_tokenizers(tmp_path: Path, tiny_tokenizer) -> None:
    report = validate_file(write_jsonl(tmp_path / "fixed.jsonl", FIXED), tokenizer=tiny_tokenizer)
    assert report.max_seq_len == tiny_tokenizer.model_max_length == 2048
    assert report.n_too_long == 0
    assert report.billing_tokens == sum(_expected(tiny_tokenizer, FIXED)[0])


def test_worker_processes_count_exactly_like_one_process(tmp_path: Path, tiny_tokenizer) -> None:
    path = write_jsonl(tmp_path / "many.jsonl", FIXED * 40)  # 560 examples: several batches
    one = validate_file(path, tokenizer=tiny_tokenizer, processes=1)
    two = validate_file(path, tokenizer=tiny_tokenizer, processes=2)
    assert one.to_dict() == two.to_dict()
    assert one.billing_tokens == 40 * sum(_expected(tiny_tokenizer, FIXED)[0])


def test_examples_the_template_cannot_render_are_errors_with_lines(tmp_path: Path, tiny_tokenizer) -> None:
    # Some real templates raise on data they do not support (e.g. no system role).
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    path = write_jsonl(tmp_path / "sys.jsonl", FIXED)
    report = validate_file(path, tokenizer=tokenizer)
    # line 4 has a developer message, which is a system message to the template
    assert [(e.line, e.code) for e in report.errors] == [
        (1, "invalid_training_file"),
        (4, "invalid_training_file"),
    ]
    assert "System role not supported" in report.errors[0].message
    assert report.job_error()[1].startswith(
        "The job failed due to an invalid training file. Invalid file format. Line 1: "
    )
