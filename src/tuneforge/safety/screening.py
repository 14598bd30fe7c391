"""Training-data screening: every string of every example goes through a `Classifier`; a file with
violations fails its job with `{training_file|validation_file}_screening_failed` and the offending
line numbers.

The default classifier is offline: a policy of categories -> regular expressions
(Settings.screening_policy as JSON, or Settings.screening_policy_file; otherwise DEFAULT_POLICY).
A different classifier (a local moderation model, a service) plugs in through
Settings.screening_classifier = "package.module:factory", where factory(settings) returns any
object with the one `classify` method. Patterns are Python regexes, case-sensitive unless they
start with `(?i)`.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuneforge.config import Settings
from tuneforge.training.data import DataFileError, iter_examples

# Credentials never belong in training data (a model can learn to repeat them verbatim); these
# patterns are precise enough to fail a job on. Content categories are the operator's policy.
DEFAULT_POLICY: dict[str, list[str]] = {
    "secrets": [
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
        r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
        r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",  # Slack tokens
        r"\bsk-(?:proj-|tf-|ant-)?[A-Za-z0-9_-]{32,}\b",  # OpenAI / tuneforge / Anthropic keys
    ],
}
MAX_REPORTED_LINES = 20


class Classifier(Protocol):
    def classify(self, text: str) -> list[str]:
        """The policy categories `text` violates; empty when it is acceptable."""


class PatternClassifier:
    def __init__(self, policy: dict[str, list[str]]):
        try:
            self._rules = [
                (category, re.compile(p)) for category, patterns in policy.items() for p in patterns
            ]
        except re.error as exc:
            raise ValueError(f"invalid screening policy pattern {exc.pattern!r}: {exc}") from None

    def classify(self, text: str) -> list[str]:
        hits: list[str] = []
        for category, rx in self._rules:
            if category not in hits and rx.search(text):
                hits.append(category)
        return hits


def load_classifier(settings: Settings) -> Classifier:
    if settings.screening_classifier:
        module, _, attr = settings.screening_classifier.partition(":")
        return getattr(importlib.import_module(module), attr or "classifier")(settings)
    if settings.screening_policy is not None:
        return PatternClassifier(settings.screening_policy)
    if settings.screening_policy_file is not None:
        policy = json.loads(Path(settings.screening_policy_file).expanduser().read_text())
        return PatternClassifier(policy)
    return PatternClassifier(DEFAULT_POLICY)


@dataclass
class ScreeningResult:
    violations: list[tuple[int, list[str]]] = field(default_factory=list)  # (line, categories)
    n_violations: int = 0

    def job_error(self, file_param: str = "training_file") -> tuple[str, str, str] | None:
        if not self.n_violations:
            return None
        label = file_param.replace("_", " ")
        shown = ", ".join(f"line {line} ({', '.join(cats)})" for line, cats in self.violations)
        more = self.n_violations - len(self.violations)
        return (
            f"{file_param}_screening_failed",
            f"The job failed because the {label} did not pass content screening: "
            f"{self.n_violations} example(s) violate the policy: {shown}"
            + (f" and {more} more" if more > 0 else "")
            + ".",
            file_param,
        )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def screen_file(
    path: str | Path, classifier: Classifier, max_lines: int = MAX_REPORTED_LINES
) -> ScreeningResult:
    """Stream `path` (already validated) and classify every string of every example."""
    result = ScreeningResult()
    examples = iter_examples(path)
    while True:
        try:
            line, example = next(examples)
        except StopIteration:
            break
        except DataFileError:  # format errors are the validator's to report
            continue
        categories: list[str] = []
        for text in _strings(example):
            for c in classifier.classify(text):
                if c not in categories:
                    categories.append(c)
        if categories:
            result.n_violations += 1
            if len(result.violations) < max_lines:
                result.violations.append((line, categories))
    return result
