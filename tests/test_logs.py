"""Library warnings become log lines at a level an operator can act on."""

from __future__ import annotations

import logging
import warnings

from tuneforge import logs


def test_warnings_are_logged_and_library_deprecations_are_debug(caplog, monkeypatch):
    monkeypatch.setattr(warnings, "showwarning", logs._log_warning)  # what configure() installs
    with caplog.at_level(logging.DEBUG, logger="py.warnings"), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("`x` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("disk almost full", UserWarning, stacklevel=1)
    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records if r.name == "py.warnings"}
    assert levels == {"FutureWarning": logging.DEBUG, "UserWarning": logging.WARNING}
