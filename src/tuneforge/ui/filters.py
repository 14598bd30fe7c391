"""Jinja filters for readable pages: times, durations, sizes, numbers."""

from __future__ import annotations

import json
import time
from typing import Any


def ts(value: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "—"


def dur(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def num(n: Any) -> str:
    return "—" if n is None else f"{n:,}" if isinstance(n, int) else str(n)


def register(env: Any) -> None:
    env.filters.update(
        ts=ts, dur=dur, size=size, num=num, pretty=lambda v: json.dumps(v, indent=2, ensure_ascii=False)
    )
