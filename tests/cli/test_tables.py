"""CLI tables on a terminal: ids are never cut or wrapped, whatever the width."""

from __future__ import annotations

import io

from rich.console import Console

from tuneforge.cli.client import print_table

JOB = "ftjob-Bs75Qv7abcdEFGHijklMNOP"
MODEL = "ft:tuneforge-tiny:default:quickstart:AbCd1234"


def render(width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False)
    print_table(
        ("id", "status", "model", "fine_tuned_model", "created_at"),
        [(JOB, "succeeded", "tuneforge-tiny", MODEL, "2026-12-02 03:00:00")],
        keep=("id", "fine_tuned_model"),
        console=console,
    )
    return out.getvalue()


def test_ids_whole_at_80_columns_and_other_columns_dropped_at_60():
    for width in (200, 80, 60):
        text = render(width)
        assert JOB in text and "…" not in text, text  # the id whole; a model name may wrap
        assert max(map(len, text.splitlines())) <= width
    assert MODEL in render(200) and "2026-12-02 03:00:00" in render(200)
    assert "not shown at this width" in render(60)
    assert "not shown" not in render(200)
