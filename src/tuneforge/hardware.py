"""What this machine computes fast: bf16 or fp32, decided by a short measured probe, cached.

One CPU flag does not say it: AMX Xeons and AVX512-BF16 EPYCs multiply bf16 natively (2-5x fp32),
older CPUs emulate it (slower than fp32), and the gain depends on the matrix shapes. So the probe
times `F.linear` in both dtypes on the shapes a model's layers have (a 512-token block through a
hidden x intermediate projection) and picks bf16 when it is clearly faster. A few ms per shape;
the answer is cached per machine (CPU model, torch version, thread count, shape) in
`~/.cache/tuneforge/hardware.json` (TUNEFORGE_CACHE_DIR moves it) so a run, its resume and the
server that serves its model all decide the same way. Training and serving both ask here.

TUNEFORGE_BF16=1|0 overrides the probe (ops, tests that need one precision).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

PROBE_VERSION = 1
PROBE_ROWS = 512  # tokens in the probe's block: a packed micro-batch slice
BF16_MIN_GAIN = 1.3  # bf16 must beat fp32 by this much (casts at the edges cost something)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_file() -> Path:
    root = os.environ.get("TUNEFORGE_CACHE_DIR") or Path.home() / ".cache" / "tuneforge"
    return Path(root) / "hardware.json"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, value: dict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = value
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)  # atomic: concurrent probes never leave half a file
    except OSError:
        pass  # a read-only home: probe again next time, nothing breaks


def linear_gflops(dtype: torch.dtype, rows: int, k: int, n: int, *, repeats: int = 12) -> float:
    """Best-of-`repeats` GFLOP/s of `F.linear` (rows x k) @ (k x n) in `dtype` on CPU. Best, not
    mean: on a shared machine the fastest run is the one least disturbed by neighbours."""
    x = torch.randn(rows, k).to(dtype)
    w = torch.randn(n, k).to(dtype)
    for _ in range(2):
        F.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        F.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * k * n / best / 1e9


def matmul_peak_gflops(threads: int, n: int = 2048, seconds: float = 1.0) -> dict[str, float]:
    """This machine's square-matmul rate in fp32 and bf16 at `threads` threads (best of several
    timed runs): the denominator of the benchmark's model-FLOP share. "fp32"/"bf16" per wall
    second; "fp32_cpu"/"bf16_cpu" per CPU-second of the process (on a loaded machine the wall
    rate shows the neighbours; the CPU rate, with one thread, is the core's own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            a @ b
            best = best_cpu = float("inf")
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0, c0 = time.perf_counter(), time.process_time()
                a @ b
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            out[name] = 2 * n**3 / best / 1e9
            out[f"{name}_cpu"] = 2 * n**3 / max(best_cpu, 1e-9) / 1e9
        return out
    finally:
        torch.set_num_threads(before)


def bf16_is_fast(device: torch.device | str, hidden: int = 1024, intermediate: int | None = None) -> bool:
    """Whether bf16 autocast runs this model's matmuls clearly faster than fp32 on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    forced = os.environ.get("TUNEFORGE_BF16", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    return bool(probe_cpu(hidden, intermediate or 3 * hidden)["bf16_fast"])


def probe_cpu(hidden: int, intermediate: int) -> dict:
    """The cached probe result for one (hidden, intermediate) shape at the current thread count."""
    threads = torch.get_num_threads()
    key = (
        f"v{PROBE_VERSION}|{cpu_model()}|torch {torch.__version__}|{threads} threads|{hidden}x{intermediate}"
    )
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and "bf16_fast" in cached:
        return cached
    fp32 = linear_gflops(torch.float32, PROBE_ROWS, hidden, intermediate)
    bf16 = linear_gflops(torch.bfloat16, PROBE_ROWS, hidden, intermediate)
    result = {
        "fp32_gflops": round(fp32, 1),
        "bf16_gflops": round(bf16, 1),
        "bf16_fast": bf16 >= BF16_MIN_GAIN * fp32,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_cache(key, result)
    return result


def model_shape(config) -> tuple[int, int]:
    """(hidden, intermediate) of a transformers config (text part), for the probe."""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 1024)
    inter = int(getattr(cfg, "intermediate_size", 0) or getattr(cfg, "n_inner", 0) or 4 * hidden)
    return hidden, inter


def linears_to_bf16(model, *, skip_trainable: bool = False) -> None:
    """Round the linear layers' weights to bf16 once, for a model run under bf16 autocast.

    Autocast rounds fp32 weights to bf16 for every matmul and keeps embeddings, norms and the
    residual stream in fp32; rounding the (frozen) linear weights once gives the same numbers
    without a cast per step and half the bytes. A tied output layer gets its own bf16 copy so the
    input embedding stays fp32. `skip_trainable` leaves weights that train (LoRA adapters, fp32
    master weights) alone."""
    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    if out is not None and inp is not None and out.weight is inp.weight and not out.weight.requires_grad:
        out.weight = torch.nn.Parameter(out.weight.detach().clone(), requires_grad=False)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            if skip_trainable and any(p.requires_grad for p in module.parameters(recurse=False)):
                continue
            module.to(torch.bfloat16)
