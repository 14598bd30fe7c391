"""Logging set-up shared by every tuneforge process (server, worker, training child)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Libraries whose INFO lines drown what an operator needs to see (e.g. alembic's plugin set-up on
# every start); their warnings still come through.
_QUIET = ("alembic", "httpx", "urllib3", "filelock", "botocore", "boto3", "s3transfer")
# Warnings about the libraries' own future (deprecations inside transformers/peft/trl calling each
# other) say nothing an operator can act on: they are logged at DEBUG, other warnings at WARNING.
_LIBRARY_FUTURE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    level = logging.DEBUG if issubclass(category, _LIBRARY_FUTURE) else logging.WARNING
    logging.getLogger("py.warnings").log(
        level, "%s: %s (%s:%s)", category.__name__, str(message).strip(), filename, lineno
    )


def _no_progress_bars() -> None:
    """tqdm bars ("Loading weights", "Writing model shards") are carriage-return noise in a log
    file. The env var reaches libraries imported later and child processes; modules already
    imported are told directly."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()
    if "huggingface_hub.utils" in sys.modules:
        sys.modules["huggingface_hub.utils"].disable_progress_bars()


def configure(level: str = "info", *, process: str = "server") -> None:
    """key=value lines on stderr, tagged with the process kind so interleaved logs stay readable;
    Python warnings become log lines, and library progress bars are off."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        force=True,
        format=f"%(asctime)s process={process} level=%(levelname)s logger=%(name)s %(message)s",
    )
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.showwarning = _log_warning
    _no_progress_bars()
