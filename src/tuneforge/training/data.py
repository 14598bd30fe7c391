"""Training data: stream a JSONL file one example at a time and check it against OpenAI's formats.

The file is never loaded whole (uploads reach 512 MB and more): lines come from a large buffered
binary read and each is parsed on its own. Line numbers are 1-based and count blank lines, so they
match what an editor shows; blank lines themselves are skipped.

`check_example` knows the formats (OpenAI chat, legacy prompt/completion, and DPO, which SFT
refuses); `validate_file` streams a file through it and gathers statistics (`stats.py`) into a
`ValidationReport`, which also says what a failed job shows (`job_error`).
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.training.stats import (
    Distribution,
    RenderFailure,
    TokenCounter,
    TokenCounts,
    auto_n_epochs,
)

READ_BUFFER = 1 << 20  # 1 MiB reads: far fewer syscalls than the default 8 KiB


@dataclass(frozen=True)
class RawLine:
    line: int  # 1-based
    data: bytes  # without the trailing newline
    terminated: bool  # False only for a last line that has no trailing newline


class DataFileError(ValueError):
    """A line that cannot be read as a JSON object (raised by `iter_examples`)."""

    def __init__(
        self, line: int, message: str, *, code: str = "invalid_training_file", param: str | None = None
    ):
        super().__init__(f"Line {line}: {message}")
        self.line = line
        self.message = message
        self.code = code
        self.param = param


def iter_lines(path: str | Path) -> Iterator[RawLine]:
    """Every non-blank line of `path` with its 1-based number; streams, never reads the file whole."""
    with open(path, "rb", buffering=READ_BUFFER) as fh:
        for number, raw in enumerate(fh, start=1):
            terminated = raw.endswith(b"\n")
            data = raw.rstrip(b"\r\n") if terminated else raw
            if not data.strip():
                continue
            yield RawLine(number, data, terminated)


def parse_line(raw: RawLine) -> dict:
    """The JSON object on one line, or DataFileError saying what is wrong with it."""
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(raw.line, f"the line is not valid UTF-8 text (byte {exc.start})") from None
    if text.startswith("\ufeff"):  # a BOM on the first line: editors on Windows write one
        text = text[1:]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if not raw.terminated:
            raise DataFileError(
                raw.line, f"the last line is truncated (no trailing newline and not valid JSON: {exc.msg})"
            ) from None
        raise DataFileError(
            raw.line, f"the line is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(obj, dict):
        raise DataFileError(raw.line, f"each line must be a JSON object, got {_json_type(obj)}")
    return obj


def iter_examples(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, example) for every non-blank line; DataFileError on a line that is not a
    JSON object. Schema checks are `validate_file`'s job: callers validate first."""
    for raw in iter_lines(path):
        yield raw.line, parse_line(raw)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- formats ------------------------------------------------------------------------------------

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    # reasoning_content: not OpenAI's, but HF / Qwen3 reasoning data carries it (render.py)
    "assistant": {
        "role",
        "content",
        "name",
        "weight",
        "tool_calls",
        "function_call",
        "refusal",
        "reasoning_content",
    },
    "tool": {"role", "content", "tool_call_id"},
    "function": {"role", "content", "name"},
}
_CHAT_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
_PROMPT_KEYS = {"prompt", "completion"}
_DPO_KEYS = {
    "input",
    "preferred_output",
    "non_preferred_output",
    "preferred_completion",
    "non_preferred_completion",
}


@dataclass(frozen=True)
class Problem:
    """What is wrong with one example: the field (`messages[1].role`) and why."""

    param: str | None
    message: str
    message_index: int | None = None  # 0-based index into messages, when the problem is in one


def detect_format(example: dict) -> str | None:
    if "messages" in example:
        return CHAT
    if example.keys() & _PROMPT_KEYS:
        return PROMPT_COMPLETION
    return None


def check_example(example: dict, *, ignored_keys: set[str] | None = None) -> Problem | None:
    """The first problem with one parsed example, or None when it is a valid SFT example.
    Unknown top-level keys are not an error (people keep ids and metadata beside the data); they
    are added to `ignored_keys` so the caller can warn."""
    fmt = detect_format(example)
    if fmt == CHAT:
        known = _CHAT_KEYS
        problem = _check_chat(example)
    elif fmt == PROMPT_COMPLETION:
        known = _PROMPT_KEYS
        problem = _check_prompt_completion(example)
    elif example.keys() & _DPO_KEYS:
        return Problem(
            None,
            "this is the DPO (preference) format (input / preferred_output / "
            "non_preferred_output); DPO data needs method dpo, not supervised",
        )
    else:
        return Problem(
            "messages",
            "unexpected format: expected either chat messages ('messages') "
            "or prompt/completion pairs ('prompt', 'completion')",
        )
    if ignored_keys is not None:
        ignored_keys.update(k for k in example if k not in known)
    return problem


def _check_prompt_completion(example: dict) -> Problem | None:
    for key in ("prompt", "completion"):
        if key not in example:
            return Problem(key, f"'{key}' is missing: a prompt/completion example needs both")
        if not isinstance(example[key], str):
            return Problem(key, f"'{key}' must be a string, got {_json_type(example[key])}")
    return None


def _check_chat(example: dict) -> Problem | None:
    messages = example["messages"]
    if not isinstance(messages, list):
        return Problem("messages", f"'messages' must be an array of messages, got {_json_type(messages)}")
    if not messages:
        return Problem("messages", "'messages' is empty")
    problem = _check_tools(example)
    if problem:
        return problem
    has_assistant = False
    for i, message in enumerate(messages):
        problem = _check_message(message, i)
        if problem:
            return problem
        has_assistant = has_assistant or message["role"] == "assistant"
    if not has_assistant:
        return Problem(
            "messages", "no assistant message: an example needs at least one assistant message to train on"
        )
    return None


def _check_message(message: object, i: int) -> Problem | None:
    at = f"messages[{i}]"

    def bad(field: str | None, text: str) -> Problem:
        return Problem(f"{at}.{field}" if field else at, text, i)

    if not isinstance(message, dict):
        return bad(None, f"a message must be an object, got {_json_type(message)}")
    if "role" not in message:
        return bad("role", "'role' is missing")
    role = message["role"]
    if role not in ROLES:
        return bad("role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    for key in message:
        if key == "weight" and role != "assistant":
            return bad("weight", f"'weight' is only allowed on assistant messages, not on {role}")
        if key not in _MESSAGE_KEYS[role]:
            return bad(key, f"unrecognized key {key!r} on {_article(role)} {role} message")
    if "name" in message and (not isinstance(message["name"], str) or not message["name"]):
        return bad("name", "'name' must be a non-empty string")

    if role == "assistant":
        calls = "tool_calls" in message or "function_call" in message
        if message.get("content") is None and not calls:
            return bad(
                "content", "missing content: an assistant message needs content, tool_calls or function_call"
            )
        if message.get("content") is not None:
            problem = _check_content(message["content"], at)
            if problem:
                return Problem(problem.param, problem.message, i)
        reasoning = message.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            return bad(
                "reasoning_content", f"'reasoning_content' must be a string, got {_json_type(reasoning)}"
            )
        if "weight" in message:
            weight = message["weight"]
            # bool is an int in Python; `true` is not a valid weight
            if isinstance(weight, bool) or weight not in (0, 1):
                return bad("weight", f"'weight' must be 0 or 1, got {json.dumps(weight)}")
        if "tool_calls" in message:
            problem = _check_tool_calls(message["tool_calls"], at)
            if problem:
                return Problem(problem.param, problem.message, i)
        if "function_call" in message:
            problem = _check_function(message["function_call"], f"{at}.function_call", arguments=True)
            if problem:
                return Problem(problem.param, problem.message, i)
        return None

    if "content" not in message or message["content"] is None:
        return bad("content", f"missing content: {_article(role)} {role} message needs 'content'")
    problem = _check_content(message["content"], at)
    if problem:
        return Problem(problem.param, problem.message, i)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        return bad("tool_call_id", "a tool message needs 'tool_call_id' (a string)")
    if role == "function" and "name" not in message:
        return bad("name", "a function message needs 'name'")
    return None


def _check_content(content: object, at: str) -> Problem | None:
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return Problem(
            f"{at}.content",
            f"'content' must be a string or an array of text parts, got {_json_type(content)}",
        )
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        if not isinstance(part, dict):
            return Problem(where, f"a content part must be an object, got {_json_type(part)}")
        kind = part.get("type")
        if kind in ("image_url", "input_audio", "file"):
            return Problem(
                f"{where}.type", f"{kind} content is not supported: tuneforge trains text-only models"
            )
        if kind != "text":
            return Problem(f"{where}.type", f"unknown content part type {kind!r}; expected 'text'")
        if not isinstance(part.get("text"), str):
            return Problem(f"{where}.text", "a text part needs 'text' (a string)")
    return None


def _check_tool_calls(calls: object, at: str) -> Problem | None:
    if not isinstance(calls, list) or not calls:
        return Problem(f"{at}.tool_calls", "'tool_calls' must be a non-empty array")
    for j, call in enumerate(calls):
        where = f"{at}.tool_calls[{j}]"
        if not isinstance(call, dict):
            return Problem(where, f"a tool call must be an object, got {_json_type(call)}")
        if not isinstance(call.get("id"), str) or not call["id"]:
            return Problem(f"{where}.id", "a tool call needs 'id' (a non-empty string)")
        if call.get("type", "function") != "function":
            return Problem(f"{where}.type", f"tool call type must be 'function', got {call.get('type')!r}")
        problem = _check_function(call.get("function"), f"{where}.function", arguments=True)
        if problem:
            return problem
    return None


def _check_function(fn: object, at: str, *, arguments: bool) -> Problem | None:
    """A function call ({name, arguments}) or a function definition ({name, ...})."""
    if not isinstance(fn, dict):
        return Problem(
            at, f"must be an object with 'name'{' and arguments' if arguments else ''}, got {_json_type(fn)}"
        )
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        return Problem(f"{at}.name", "'name' must be a non-empty string")
    if arguments and not isinstance(fn.get("arguments"), str):
        return Problem(
            f"{at}.arguments",
            f"'arguments' must be a string (JSON-encoded arguments), got {_json_type(fn.get('arguments'))}",
        )
    return None


def _check_tools(example: dict) -> Problem | None:
    if "tools" in example:
        tools = example["tools"]
        if not isinstance(tools, list):
            return Problem("tools", f"'tools' must be an array, got {_json_type(tools)}")
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                return Problem(f"tools[{j}]", "a tool must be an object with type 'function'")
            problem = _check_function(tool.get("function"), f"tools[{j}].function", arguments=False)
            if problem:
                return problem
    if "functions" in example:
        functions = example["functions"]
        if not isinstance(functions, list):
            return Problem("functions", f"'functions' must be an array, got {_json_type(functions)}")
        for j, fn in enumerate(functions):
            problem = _check_function(fn, f"functions[{j}]", arguments=False)
            if problem:
                return problem
    if "parallel_tool_calls" in example and not isinstance(example["parallel_tool_calls"], bool):
        return Problem("parallel_tool_calls", "'parallel_tool_calls' must be a boolean")
    return None


# --- DPO (preference) format -------------------------------------------------------------------

PREFERENCE = "preference"
# OpenAI's 2025-06 schema spelled the outputs *_completion; the guide and real files say *_output.
_OUTPUT_ALIASES = {
    "preferred_output": "preferred_completion",
    "non_preferred_output": "non_preferred_completion",
}


def preference_outputs(example: dict) -> tuple[Any, Any]:
    """(preferred, non_preferred) as given, under either spelling (None where missing)."""
    return tuple(example.get(key, example.get(alias)) for key, alias in _OUTPUT_ALIASES.items())


def preference_sides(example: dict) -> tuple[dict, dict]:
    """A valid preference example as two chat examples, (chosen, rejected): the input
    conversation plus one output each. Only the output turn is trained (earlier assistant turns of
    the input get weight 0), so the renderer's label mask covers that turn and its terminator."""
    inp = example["input"]
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in inp["messages"]]
    extra = {k: inp[k] for k in ("tools", "functions") if k in inp}
    return tuple(
        {"messages": context + [{k: v for k, v in out[0].items() if k != "weight"}], **extra}
        for out in preference_outputs(example)
    )


def check_preference_example(example: dict, *, ignored_keys: set[str] | None = None) -> Problem | None:
    """The first problem with one example of a DPO job's file, or None when it is a valid pair:
    `input` (a conversation ending before the answer) and one assistant message per output."""
    if detect_format(example) is not None:
        return Problem(
            None,
            "this is supervised (SFT) data ('messages' or 'prompt'/'completion'); "
            "a DPO job needs preference pairs: input / preferred_output / "
            "non_preferred_output",
        )
    inp = example.get("input")
    if inp is None:
        return Problem(
            "input",
            "'input' is missing: a preference example needs the conversation "
            "('input': {'messages': [...]}) that the outputs answer",
        )
    if not isinstance(inp, dict):
        return Problem("input", f"'input' must be an object with 'messages', got {_json_type(inp)}")
    problem = _check_preference_input(inp)
    if problem:
        return problem
    outputs = preference_outputs(example)
    for key, output in zip(_OUTPUT_ALIASES, outputs, strict=True):
        problem = _check_output(key, output)
        if problem:
            return problem
    if json.dumps(outputs[0], sort_keys=True) == json.dumps(outputs[1], sort_keys=True):
        return Problem(
            "non_preferred_output",
            "non_preferred_output is identical to preferred_output: a pair must differ to teach a preference",
        )
    if ignored_keys is not None:
        known = {"input", *_OUTPUT_ALIASES, *_OUTPUT_ALIASES.values()}
        ignored_keys.update(k for k in example if k not in known)
        ignored_keys.update(f"input.{k}" for k in inp if k not in _CHAT_KEYS)
    return None


def detect_method(path: str | Path) -> str:
    """ "dpo" when the file's first example is a preference pair, else "supervised" (for callers
    that were not told the job's method, such as `tuneforge data validate`)."""
    for raw in iter_lines(path):
        try:
            example = parse_line(raw)
        except DataFileError:
            continue
        return "dpo" if "input" in example and detect_format(example) is None else "supervised"
    return "supervised"


def _within(prefix: str, problem: Problem, index_from: str = "messages") -> Problem:
    """`problem` found in a nested conversation, its field named from the example's top level."""
    param = problem.param or index_from
    if param.startswith(index_from):
        param = prefix + param[len(index_from) :]
    else:
        param = f"{prefix.rsplit('.', 1)[0]}.{param}" if "." in prefix else param
    return Problem(param, f"{param}: {problem.message}")


def _check_preference_input(inp: dict) -> Problem | None:
    messages = inp.get("messages")
    if not isinstance(messages, list) or not messages:
        what = (
            "is missing"
            if messages is None
            else (
                "is empty" if isinstance(messages, list) else f"must be an array, got {_json_type(messages)}"
            )
        )
        return Problem("input.messages", f"'input.messages' {what}: the conversation the outputs answer")
    problem = _check_tools(inp)
    if problem:
        return _within("input.messages", problem)
    for i, message in enumerate(messages):
        problem = _check_message(message, i)
        if problem:
            return _within("input.messages", problem)
    if messages[-1]["role"] == "assistant":
        return Problem(
            f"input.messages[{len(messages) - 1}].role",
            f"input.messages[{len(messages) - 1}].role: the input ends with an "
            "assistant message: it must end where the "
            "assistant answers (a user or tool message)",
        )
    return None


def _check_output(key: str, output: Any) -> Problem | None:
    if output is None:
        return Problem(
            key,
            f"'{key}' is missing: a preference example needs both preferred_output and non_preferred_output",
        )
    if not isinstance(output, list):
        return Problem(
            key, f"'{key}' must be an array holding one assistant message, got {_json_type(output)}"
        )
    if not output:
        return Problem(key, f"'{key}' is empty: it must hold the one assistant message")
    if len(output) != 1:
        return Problem(key, f"'{key}' must hold exactly one assistant message, got {len(output)}")
    message = output[0]
    problem = _check_message(message, 0)
    if problem:
        return _within(f"{key}[0]", problem, index_from="messages[0]")
    if message["role"] != "assistant":
        return Problem(
            f"{key}[0].role",
            f"{key}[0].role: the output must be an assistant message, got {message['role']!r}",
        )
    if (
        not message.get("tool_calls")
        and not message.get("function_call")
        and not "".join(_content_text(message.get("content"))).strip()
    ):
        return Problem(f"{key}[0].content", f"{key}[0].content: the output is empty")
    return None


def _content_text(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p.get("text", "") for p in content or [] if isinstance(p, dict)]


# --- validating a whole file --------------------------------------------------------------------

INVALID_FILE = "invalid_training_file"
INVALID_N_EXAMPLES = "invalid_n_examples"
MIN_EXAMPLES = 10
NOT_JSONL = (
    "The file is not in the chat JSONL format: no line of it is a JSON object. Each line "
    'must be one JSON object with a "messages" list, e.g. {"messages": [{"role": "user", '
    '"content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}'
)
TOKEN_BATCH = 256  # examples rendered per task
PARALLEL_MIN_BYTES = 16 * 1024 * 1024  # smaller files: starting worker processes costs more than it saves


@dataclass(frozen=True)
class DataError:
    line: int | None  # 1-based; None for file-level errors (too few examples)
    code: str
    message: str
    param: str | None = None  # the field, e.g. "messages[1].role"
    message_index: int | None = None  # 0-based message the error is in, when it is in one

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message, "param": self.param}


@dataclass
class ValidationReport:
    file_param: str = "training_file"  # what a failed job names: training_file | validation_file
    format: str | None = None  # "chat" | "prompt_completion"
    n_examples: int = 0  # valid examples (what training would use)
    n_invalid_examples: int = 0  # non-blank lines with an error
    errors: list[DataError] = field(default_factory=list)  # the first max_errors
    n_errors: int = 0  # all of them
    warnings: list[str] = field(default_factory=list)
    messages_per_example: Distribution | None = None
    total_tokens_per_example: Distribution | None = None
    trained_tokens_per_example: Distribution | None = None
    n_missing_system: int = 0
    n_missing_user: int = 0
    n_without_trained_tokens: int = 0  # examples whose every assistant message has weight 0
    max_seq_len: int | None = None
    n_too_long: int | None = None  # examples over max_seq_len: truncated when training
    n_epochs: int = 0
    n_epochs_auto: bool = True
    billing_tokens: int | None = None  # tokens per example as truncated at max_seq_len, summed
    estimated_trained_tokens: int | None = None  # billing_tokens x n_epochs
    price_per_million_tokens: float = 0.0
    estimated_cost: float | None = None

    @property
    def ok(self) -> bool:
        return self.n_errors == 0

    def job_error(self) -> tuple[str, str, str] | None:
        """(code, message, param) a failed job shows, worded like OpenAI's; None when valid."""
        label = self.file_param.replace("_", " ")  # "training file"
        for error in self.errors:
            if error.code == INVALID_FILE:
                where = "" if error.line is None else f"Line {error.line}"
                if error.message_index is not None:
                    where += f", message {error.message_index + 1}"
                return (
                    INVALID_FILE,
                    f"The job failed due to an invalid {label}. Invalid file format. "
                    + (f"{where}: " if where else "")
                    + error.message,
                    self.file_param,
                )
        for error in self.errors:
            return error.code, error.message, self.file_param
        return None

    def to_dict(self) -> dict[str, Any]:
        def dist(d: Distribution | None) -> dict | None:
            return d.to_dict() if d else None

        return {
            "file_param": self.file_param,
            "format": self.format,
            "n_examples": self.n_examples,
            "n_invalid_examples": self.n_invalid_examples,
            "errors": [e.to_dict() for e in self.errors],
            "n_errors": self.n_errors,
            "warnings": list(self.warnings),
            "messages_per_example": dist(self.messages_per_example),
            "total_tokens_per_example": dist(self.total_tokens_per_example),
            "trained_tokens_per_example": dist(self.trained_tokens_per_example),
            "n_missing_system": self.n_missing_system,
            "n_missing_user": self.n_missing_user,
            "n_without_trained_tokens": self.n_without_trained_tokens,
            "max_seq_len": self.max_seq_len,
            "n_too_long": self.n_too_long,
            "n_epochs": self.n_epochs,
            "n_epochs_auto": self.n_epochs_auto,
            "billing_tokens": self.billing_tokens,
            "estimated_trained_tokens": self.estimated_trained_tokens,
            "price_per_million_tokens": self.price_per_million_tokens,
            "estimated_cost": self.estimated_cost,
            "job_error": (
                dict(zip(("code", "message", "param"), self.job_error())) if self.job_error() else None
            ),
        }


def validate_file(
    path: str | Path,
    *,
    tokenizer: Any = None,
    max_seq_len: int | None = None,
    price_per_million_tokens: float = 0.0,
    n_epochs: int | None = None,
    max_errors: int = 20,
    min_examples: int = MIN_EXAMPLES,
    file_param: str = "training_file",
    processes: int | None = None,
    method: str = "supervised",
) -> ValidationReport:
    """Stream `path` once: check every example, count tokens with `tokenizer` (skipped when None),
    and estimate epochs, trained tokens and cost.

    `n_epochs` None means OpenAI's `auto` rule. `max_seq_len` None means the tokenizer's
    `model_max_length` when it is a real limit. `processes`: worker processes that render examples
    for token counts; None uses every core for files over PARALLEL_MIN_BYTES, else this process.
    `method`: the job's method.type; "dpo" expects preference pairs (`check_preference_example`).
    """
    report = ValidationReport(
        file_param=file_param,
        n_epochs_auto=n_epochs is None,
        price_per_million_tokens=price_per_million_tokens,
    )
    if max_seq_len is None and tokenizer is not None:
        limit = getattr(tokenizer, "model_max_length", None)
        max_seq_len = limit if isinstance(limit, int) and limit < 10**7 else None  # HF's "no limit"
    report.max_seq_len = max_seq_len
    if processes is None:
        big = Path(path).stat().st_size >= PARALLEL_MIN_BYTES
        processes = min(os.cpu_count() or 1, 8) if big else 1

    errors: list[DataError] = []
    counts = None
    if tokenizer is None:
        n_messages, n_objects = _scan(path, report, errors, max_errors, None, method)
    else:
        with _counter(tokenizer, processes, method, max_seq_len) as counter:
            n_messages, n_objects = _scan(path, report, errors, max_errors, counter, method)
            counts = counter.finish()
        for failure in counts.failures:
            report.n_errors += 1
            report.n_examples -= 1
            report.n_invalid_examples += 1
            errors.append(DataError(failure.line, failure.code, failure.message, failure.param))

    n_lines = report.n_examples + report.n_invalid_examples
    if n_objects == 0 and report.n_invalid_examples:
        # Not one line is a JSON object (a CSV, a JSON array, plain text): one error saying what
        # the format must be helps more than an error per line.
        errors[:] = [DataError(None, INVALID_FILE, NOT_JSONL)]
        report.n_errors = 1
    elif n_lines < min_examples:
        # counted in lines, so a file whose only problem is a bad line gets that one error
        report.n_errors += 1
        kind = file_param.replace("_", " ").capitalize()
        errors.append(
            DataError(
                None,
                INVALID_N_EXAMPLES,
                f"{kind} has {n_lines} example(s), but must have at least {min_examples} examples",
            )
        )
    # render failures arrive after later lines' schema errors: report the first lines first
    errors.sort(key=lambda e: (e.line is None, e.line or 0))
    report.errors = errors[:max_errors]

    report.messages_per_example = Distribution.of(n_messages)
    if n_epochs is not None:
        report.n_epochs = n_epochs
    else:  # no valid example: no epochs to speak of
        report.n_epochs = auto_n_epochs(report.n_examples) if report.n_examples else 0
    if report.n_without_trained_tokens:
        report.warnings.append(
            f"{report.n_without_trained_tokens} example(s) have weight 0 on every "
            "assistant message: nothing in them is trained"
        )
    if report.n_missing_user:
        report.warnings.append(f"{report.n_missing_user} example(s) have no user message")
    if counts is None:
        report.warnings.append("token statistics skipped: no tokenizer given (choose a model)")
    else:
        _token_statistics(report, counts, max_seq_len, price_per_million_tokens)
    return report


def _scan(
    path: str | Path,
    report: ValidationReport,
    errors: list[DataError],
    max_errors: int,
    counter: TokenCounter | None,
    method: str = "supervised",
) -> tuple[array, int]:
    """The streaming pass: schema checks and per-example counts; valid examples go to `counter`
    in batches. Returns messages per valid example, and how many lines were JSON objects."""
    n_messages = array("i")
    n_objects = 0
    batch: list[tuple[int, dict]] = []
    ignored_keys: set[str] = set()

    def error(line: int, problem: Problem) -> None:
        report.n_errors += 1
        report.n_invalid_examples += 1
        if len(errors) < max_errors:
            errors.append(
                DataError(line, INVALID_FILE, problem.message, problem.param, problem.message_index)
            )

    for raw in iter_lines(path):
        try:
            example = parse_line(raw)
        except DataFileError as exc:
            error(raw.line, Problem(None, exc.message))
            continue
        n_objects += 1
        if method == "dpo":
            problem, fmt = check_preference_example(example, ignored_keys=ignored_keys), PREFERENCE
        else:
            problem, fmt = check_example(example, ignored_keys=ignored_keys), detect_format(example)
        if problem is None and report.format is not None and fmt != report.format:
            # one file, one format: the trainer renders every example the same way
            problem = Problem(
                None,
                f"this example is in {fmt} format but the file started with "
                f"{report.format} examples; a file must not mix formats",
            )
        if problem is not None:
            error(raw.line, problem)
            continue
        report.n_examples += 1
        report.format = report.format or fmt
        if fmt == PREFERENCE:
            _count_preference(report, n_messages, example)
        elif fmt == CHAT:
            messages = example["messages"]
            n_messages.append(len(messages))
            roles = {m["role"] for m in messages}
            report.n_missing_system += not roles & {"system", "developer"}
            report.n_missing_user += "user" not in roles
            if all(m.get("weight", 1) == 0 for m in messages if m["role"] == "assistant"):
                report.n_without_trained_tokens += 1
        else:
            n_messages.append(2)
        if counter is not None:
            batch.append((raw.line, example))
            if len(batch) >= TOKEN_BATCH:
                counter.add(batch)
                batch = []
    if counter is not None and batch:
        counter.add(batch)
    if ignored_keys:
        report.warnings.append("unrecognized top-level keys were ignored: " + ", ".join(sorted(ignored_keys)))
    return n_messages, n_objects


def _count_preference(report: ValidationReport, n_messages: array, example: dict) -> None:
    """The per-example counts of a valid preference pair: its input plus one output."""
    messages = example["input"]["messages"]
    n_messages.append(len(messages) + 1)
    roles = {m["role"] for m in messages}
    report.n_missing_system += not roles & {"system", "developer"}
    report.n_missing_user += "user" not in roles


def _counter(tokenizer: Any, processes: int, method: str, max_seq_len: int | None):
    if method == "dpo":
        return _PreferenceCounter(tokenizer, max_seq_len)
    return TokenCounter(tokenizer, processes, max_seq_len)


class _PreferenceCounter:
    """TokenCounter's interface for preference pairs: per pair, the tokens of both renderings
    (input + preferred, input + non-preferred) and their trained (output) tokens, summed, which
    is what the DPO trainer processes; billed: each side cut at `max_seq_len` on its own, as in
    training. In this process (DPO files are small)."""

    def __init__(self, tokenizer: Any, max_seq_len: int | None):
        self._tokenizer = tokenizer
        self._max_seq_len = max_seq_len
        self.counts = TokenCounts()

    def add(self, batch: list[tuple[int, dict]]) -> None:
        from tuneforge.training.batch_render import render_batch
        from tuneforge.training.render import IGNORE_INDEX, truncate

        sides = [side for _, example in batch for side in preference_sides(example)]
        rendering = render_batch(self._tokenizer, sides, max_seq_len=None)
        for n, (line, _example) in enumerate(batch):
            pair = rendering.rendered[2 * n : 2 * n + 2]
            if None in pair:
                exc = rendering.errors[2 * n + pair.index(None)]
                self.counts.failures.append(
                    RenderFailure(line, exc.code or INVALID_FILE, exc.message, exc.param)
                )
                continue
            self.counts.totals.append(sum(len(r.input_ids) for r in pair))
            self.counts.trained.append(sum(len(r.labels) - r.labels.count(IGNORE_INDEX) for r in pair))
            self.counts.billed.append(sum(len(truncate(r, self._max_seq_len)) for r in pair))

    def finish(self) -> TokenCounts:
        return self.counts

    def __enter__(self) -> _PreferenceCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _token_statistics(
    report: ValidationReport, counts: TokenCounts, max_seq_len: int | None, price_per_million_tokens: float
) -> None:
    totals = counts.totals
    report.total_tokens_per_example = Distribution.of(totals)
    report.trained_tokens_per_example = Distribution.of(counts.trained)
    # billed: as the trainer cuts each example (counted by the same rule, `render.truncate`)
    report.billing_tokens = sum(counts.billed)
    if max_seq_len is not None:
        report.n_too_long = sum(1 for t, b in zip(totals, counts.billed) if b < t)
        if report.n_too_long:
            report.warnings.append(
                f"{report.n_too_long} example(s) are longer than the context "
                f"limit of {max_seq_len} tokens and will be truncated"
            )
    report.estimated_trained_tokens = report.billing_tokens * report.n_epochs
    report.estimated_cost = round(report.estimated_trained_tokens * price_per_million_tokens / 1e6, 6)
