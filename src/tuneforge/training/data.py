"""Reading training data: stream a JSONL file one example at a time.

The file is never loaded whole (uploads reach 512 MB and more): lines come from a large buffered
binary read and each is parsed on its own. Line numbers are 1-based and count blank lines, so they
match what an editor shows; blank lines themselves are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

READ_BUFFER = 1 << 20  # 1 MiB reads: far fewer syscalls than the default 8 KiB


@dataclass(frozen=True)
class RawLine:
    line: int            # 1-based
    data: bytes          # without the trailing newline
    terminated: bool     # False only for a last line that has no trailing newline


class DataFileError(ValueError):
    """A line that cannot be read as a JSON object (raised by `iter_examples`)."""

    def __init__(self, line: int, message: str, *, code: str = "invalid_training_file",
                 param: str | None = None):
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
        raise DataFileError(raw.line, f"the line is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataFileError(raw.line, f"each line must be a JSON object, got {_json_type(obj)}")
    return obj


def iter_examples(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, example) for every non-blank line; DataFileError on a line that is not a
    JSON object. Schema checks are `validate_file`'s job: callers validate first."""
    for raw in iter_lines(path):
        yield raw.line, parse_line(raw)


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
