"""What a base-model source is, checked before it is registered (`tuneforge models add`).

A source is a local Hugging Face directory, a local `.gguf` file, or a Hugging Face hub id. Local
sources are checked now (exists, is a model, transformers has a causal-LM class for its
architecture, the GGUF is readable) so that a bad one is an error at `add` time, never a job that
fails later. A hub id cannot be checked offline: it is accepted with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import InvalidRequest
from tuneforge.gguf import is_gguf, read_config

# "org/name" or "name": what the hub accepts as a repo id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class CheckedSource:
    source: str  # what to store: an absolute path for local sources, the id for the hub
    kind: str  # "dir" | "gguf" | "hub"
    architecture: str | None
    note: str | None = None


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="source", code="invalid_model_source")


def _looks_local(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or is_gguf(source) or Path(source).exists()


def _causal_lm_class(config, source: str) -> str:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(config)].__name__
    except KeyError:
        raise _bad(
            f"{source}: unsupported architecture {config.model_type!r}: transformers has "
            "no causal language model class for it."
        ) from None


def check_source(source: str) -> CheckedSource:
    """-> the source as it will be stored; raises InvalidRequest (code invalid_model_source)."""
    if not source.strip():
        raise _bad("The model source is empty: give a local directory, a .gguf file or a Hugging Face id.")
    if not _looks_local(source):
        if not _HUB_ID.match(source):
            raise _bad(f"{source}: no such file or directory, and not a Hugging Face id.")
        return CheckedSource(
            source=source,
            kind="hub",
            architecture=None,
            note=f"{source} is not a local path: taken as a Hugging Face id, "
            "which cannot be checked offline (it is downloaded on first use).",
        )
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise _bad(f"{source}: no such file or directory.")
    if path.is_file():
        if not is_gguf(path.name):
            raise _bad(
                f"{source}: not a model: a file must be a .gguf; a Hugging Face model is "
                "a directory with a config.json."
            )
        try:
            config = read_config(path)
        except Exception as exc:  # noqa: BLE001  any reader failure means "cannot use this file"
            raise _bad(
                f"{source}: transformers cannot read this GGUF file ({type(exc).__name__}: {exc})."
            ) from None
        return CheckedSource(source=str(path), kind="gguf", architecture=_causal_lm_class(config, source))
    if not (path / "config.json").is_file():
        raise _bad(f"{source}: not a model: the directory has no config.json.")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, OSError) as exc:
        raise _bad(
            f"{source}: unsupported architecture: transformers cannot read its config.json ({exc})."
        ) from None
    return CheckedSource(source=str(path), kind="dir", architecture=_causal_lm_class(config, source))
