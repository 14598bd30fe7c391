"""GGUF base models: a `.gguf` file (what Ollama and llama.cpp users have) as a Hugging Face dir.

Training, serving, the validator and cost estimates all load Hugging Face directories. A GGUF
source is therefore de-quantised once, on first use, into `<data_dir>/models/gguf-<stem>-<key>`,
where the key hashes the file's resolved path, size and mtime: a replaced file builds a new
directory, and fine-tuned models keep the directory they were trained on (they record its path).
The tokenizer, chat template and generation config (eos) come from the file itself.

The build is atomic (a temporary directory beside the target, then a rename) and serialised by a
file lock, so two processes (the server and a worker's runner) never build it twice at once.
transformers/torch are imported only inside the build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".gguf"


def is_gguf(source: str) -> bool:
    return source.lower().endswith(SUFFIX)


def cache_dir(models_dir: Path, gguf_file: Path) -> Path:
    """Where `gguf_file` is (or will be) de-quantised: keyed by its path, size and mtime."""
    path = gguf_file.expanduser().resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return Path(models_dir) / f"gguf-{path.stem}-{key}"


def _built(target: Path) -> bool:
    return (target / "config.json").is_file()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # held until the file is closed (also on a crash)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_hf_dir(models_dir: Path, gguf_file: Path) -> Path:
    """The Hugging Face directory for `gguf_file`, building it first if it is not there."""
    target = cache_dir(models_dir, gguf_file)
    if _built(target):
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _built(target):  # another process built it while we waited
            return target
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            convert(gguf_file, tmp)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert(gguf_file: Path, out_dir: Path) -> None:
    """De-quantise `gguf_file` into a float32 Hugging Face directory (model, tokenizer, template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = gguf_file.expanduser().resolve()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, quantization_config=GgufConfig(dequantize=True)
    )
    # Dense weights now: drop the GGUF quantizer so the model saves (and loads) as a plain one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)  # config + generation_config (the file's eos/bos/pad ids)
    tokenizer.save_pretrained(out_dir)  # tokenizer + the file's chat template


def read_config(gguf_file: Path):
    """The model config transformers reads from the file's metadata (raises if it cannot)."""
    from transformers import AutoConfig

    path = gguf_file.expanduser().resolve()
    return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
