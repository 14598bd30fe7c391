"""Validation of training files: the bad-file corpus, the accepted formats, the job error wording,
the `auto` epoch rule, and streaming (no whole-file reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.helpers import weather_call, write_jsonl
from tuneforge.training.data import (
    DataFileError,
    iter_examples,
    validate_file,
)
from tuneforge.training.stats import auto_n_epochs

BAD_FILES = Path(__file__).parent / "bad_files"
EXPECTED = json.loads((BAD_FILES / "expected.json").read_text())


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_file_corpus_reports_codes_lines_and_fields(case: str) -> None:
    # pref_* cases are a DPO job's files (make_corpus.py)
    method = "dpo" if case.startswith("pref_") else "supervised"
    report = validate_file(BAD_FILES / f"{case}.jsonl", method=method)
    got = [[e.line, e.code, e.param] for e in report.errors]
    assert got == EXPECTED[case]
    assert not report.ok
    assert report.n_errors == len(EXPECTED[case])
    assert all(e.message for e in report.errors)


def test_errors_are_capped_but_streaming_counts_every_example(tmp_path: Path) -> None:
    lines = ['{"messages": "nope"}'] * 30 + [json.dumps(_chat(i)) for i in range(15)]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = validate_file(path, max_errors=5)
    assert [e.line for e in report.errors] == [1, 2, 3, 4, 5]
    assert report.n_errors == 30
    assert report.n_examples == 15  # valid ones; the 30 bad lines are n_invalid_examples
    assert report.n_invalid_examples == 30


def test_job_error_wording_like_openai() -> None:
    report = validate_file(BAD_FILES / "unknown_role.jsonl")
    code, message, param = report.job_error()
    assert code == "invalid_training_file"
    assert param == "training_file"
    assert message.startswith(
        "The job failed due to an invalid training file. Invalid file format. Line 2, message 2: "
    )
    assert "'bot'" in message

    few = validate_file(BAD_FILES / "too_few_examples.jsonl")
    assert few.job_error() == (
        "invalid_n_examples",
        "Training file has 7 example(s), but must have at least 10 examples",
        "training_file",
    )

    as_validation = validate_file(BAD_FILES / "not_json.jsonl", file_param="validation_file")
    code, message, param = as_validation.job_error()
    assert param == "validation_file"
    assert message.startswith(
        "The job failed due to an invalid validation file. Invalid file format. Line 3: "
    )


def test_dpo_data_is_refused_with_a_pointer_to_method_dpo() -> None:
    report = validate_file(BAD_FILES / "dpo_for_sft.jsonl")
    assert "method dpo" in report.errors[0].message


def test_sft_data_given_to_a_dpo_job_and_dpo_errors_name_line_and_field() -> None:
    report = validate_file(BAD_FILES / "pref_sft_data.jsonl", method="dpo")
    assert "a DPO job needs preference pairs" in report.errors[0].message
    code, message, param = validate_file(BAD_FILES / "pref_outputs_bad.jsonl", method="dpo").job_error()
    assert (code, param) == ("invalid_training_file", "training_file")
    assert message.startswith(
        "The job failed due to an invalid training file. Invalid file format. "
        "Line 1: 'preferred_output' is missing"
    )
    identical = validate_file(BAD_FILES / "pref_identical.jsonl", method="dpo")
    assert "identical" in identical.errors[0].message


def test_dpo_file_statistics_count_both_sides(tmp_path: Path, tiny_tokenizer) -> None:
    from tuneforge.training.data import detect_method, preference_sides
    from tuneforge.training.render import render_example

    pairs = [
        {
            "input": {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"Count to {i}."},
                ]
            },
            "preferred_output": [{"role": "assistant", "content": " ".join(map(str, range(i)))}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        }
        for i in range(1, 13)
    ]
    path = write_jsonl(tmp_path / "dpo.jsonl", pairs)
    assert detect_method(path) == "dpo" and detect_method(BAD_FILES / "unknown_role.jsonl") == "supervised"
    report = validate_file(
        path, tokenizer=tiny_tokenizer, method="dpo", n_epochs=2, price_per_million_tokens=2.0
    )
    assert report.ok and report.format == "preference" and report.n_examples == 12
    sides = [render_example(tiny_tokenizer, side) for p in pairs for side in preference_sides(p)]
    assert report.billing_tokens == sum(len(r) for r in sides)
    assert report.estimated_trained_tokens == 2 * report.billing_tokens
    assert report.estimated_cost == pytest.approx(report.estimated_trained_tokens * 2.0 / 1e6)
    # the trained tokens are the two output turns only, terminator included
    assert report.trained_tokens_per_example.max == max(
        sides[2 * i].n_trained + sides[2 * i + 1].n_trained for i in range(12)
    )
    assert report.messages_per_example.min == 3 and report.n_missing_system == 0


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


FULL_FEATURED = [
    {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q", "name": "bob"},
            {"role": "assistant", "content": "a", "weight": 0},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "b"}], "weight": 1},
        ]
    },
    {
        "messages": [
            {"role": "developer", "content": "d"},
            {"role": "user", "content": "weather?"},
            *weather_call(),
            {"role": "assistant", "content": "22 degrees"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "weather",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "parallel_tool_calls": False,
    },
    {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "1"},
            {"role": "assistant", "content": "one"},
        ],
        "functions": [{"name": "f", "parameters": {"type": "object", "properties": {}}}],
    },
]


def test_every_openai_chat_feature_is_accepted(tmp_path: Path) -> None:
    examples = (FULL_FEATURED * 4)[:12]
    report = validate_file(write_jsonl(tmp_path / "ok.jsonl", examples))
    assert report.errors == [] and report.ok
    assert report.format == "chat"
    assert report.n_examples == 12
    assert report.job_error() is None
    assert report.messages_per_example.min == 4 and report.messages_per_example.max == 5
    assert report.n_missing_system == 4  # the function-call example
    assert report.n_missing_user == 0
    assert any("token statistics skipped" in w for w in report.warnings)


def test_prompt_completion_format_is_accepted(tmp_path: Path) -> None:
    examples = [{"prompt": f"q{i} ->", "completion": f" a{i}"} for i in range(10)]
    report = validate_file(write_jsonl(tmp_path / "pc.jsonl", examples))
    assert report.ok and report.format == "prompt_completion"


def test_unknown_top_level_keys_are_a_warning(tmp_path: Path) -> None:
    examples = [{**_chat(i), "id": i} for i in range(10)]
    report = validate_file(write_jsonl(tmp_path / "ids.jsonl", examples))
    assert report.ok
    assert any("id" in w and "ignored" in w for w in report.warnings)


def test_reasoning_content_on_assistant_messages(tmp_path: Path) -> None:
    # Not OpenAI's, but HF / Qwen3 reasoning data carries it; it reaches the template (render.py).
    def with_reasoning(value: object) -> list[dict]:
        return [
            {
                "messages": [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": f"a{i}", "reasoning_content": value},
                ]
            }
            for i in range(10)
        ]

    assert validate_file(write_jsonl(tmp_path / "ok.jsonl", with_reasoning("think"))).ok
    report = validate_file(write_jsonl(tmp_path / "bad.jsonl", with_reasoning(["think"])))
    assert not report.ok and report.errors[0].param == "messages[1].reasoning_content"
    on_user = [
        {
            "messages": [
                {"role": "user", "content": "q", "reasoning_content": "x"},
                {"role": "assistant", "content": "a"},
            ]
        }
    ] * 10
    assert not validate_file(write_jsonl(tmp_path / "user.jsonl", on_user)).ok


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (3, 25),
        (4, 25),
        (5, 20),
        (7, 14),
        (10, 10),
        (33, 3),
        (34, 3),
        (20, 5),
        (100, 3),
        (8333, 3),
        (8334, 2),
        (12500, 2),
        (12501, 1),
        (30000, 1),
        (1_000_000, 1),
    ],
)
def test_auto_epochs_follow_the_cookbook_rule(n: int, epochs: int) -> None:
    assert auto_n_epochs(n) == epochs


def test_report_epochs_come_from_the_example_count_or_the_caller(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "twenty.jsonl", [_chat(i) for i in range(20)])
    assert validate_file(path).n_epochs == 5
    explicit = validate_file(path, n_epochs=2)
    assert explicit.n_epochs == 2 and not explicit.n_epochs_auto


def test_iter_examples_streams_line_numbers_and_stops_at_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \n{"b": 2}\r\n[3]\n')
    it = iter_examples(path)
    assert next(it) == (1, {"a": 1})
    assert next(it) == (4, {"b": 2})
    with pytest.raises(DataFileError) as info:
        next(it)
    assert info.value.line == 5


def test_a_big_file_validates_without_being_read_whole(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "big.jsonl"
    line = (
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are helpful. " * 8},
                    {"role": "user", "content": "Tell me about the sea. " * 6},
                    {"role": "assistant", "content": "The sea is wide. " * 10},
                ]
            }
        )
        + "\n"
    ).encode()
    n = (16 * 1024 * 1024) // len(line) + 1
    with open(path, "wb") as fh:
        for _ in range(n // 1000):
            fh.write(line * 1000)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        report = validate_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.n_examples == (n // 1000) * 1000
    # Reading it whole would cost at least the file's size; streaming costs the read buffer plus
    # a few bytes per example for the statistics.
    assert size > 16_000_000
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB while validating a {size / 1e6:.1f} MB file"


def test_counts_only_valid_examples(tmp_path):
    good = [
        json.dumps(
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        )
        for i in range(9)
    ]
    path = tmp_path / "nine.jsonl"
    path.write_text("\n".join(good[:2] + ['{"messages": [oops'] + good[2:]) + "\n")
    report = validate_file(path)
    assert (report.n_examples, report.n_invalid_examples, report.n_errors) == (9, 1, 1)
    assert [(e.line, e.code) for e in report.errors] == [(3, "invalid_training_file")]
    assert report.n_epochs == 11  # auto epochs for the 9 valid examples (100 // 9)


def test_a_non_json_file_gets_one_error_naming_the_format(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,completion\nhi,hello\nbye,goodbye\n")
    report = validate_file(path)
    assert (report.n_examples, report.n_errors, report.n_epochs) == (0, 1, 0)
    [error] = report.errors
    assert error.line is None and "chat JSONL" in error.message and '"messages"' in error.message
    code, message, param = report.job_error()
    assert code == "invalid_training_file" and "Line None" not in message
