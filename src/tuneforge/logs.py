"""Logging set-up shared by every tuneforge process (server, worker, training child)."""

from __future__ import annotations

import logging
import sys

# Libraries whose INFO lines drown what an operator needs to see (e.g. alembic's plugin set-up on
# every start); their warnings still come through.
_QUIET = ("alembic", "httpx", "urllib3", "filelock")


def configure(level: str = "info", *, process: str = "server") -> None:
    """key=value lines on stderr, tagged with the process kind so interleaved logs stay readable."""
    logging.basicConfig(
        stream=sys.stderr, level=level.upper(), force=True,
        format=f"%(asctime)s process={process} level=%(levelname)s logger=%(name)s %(message)s")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
