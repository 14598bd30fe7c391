"""Public ids and timestamps, shaped like OpenAI's (`file-…`, `ftjob-…`, `ftckpt_…`)."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """`prefix` + `length` random alphanumerics, e.g. new_id("file-") -> "file-Jk…"."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    """Unix seconds, the only timestamp format on the wire."""
    return int(time.time())
