"""Batched greedy choice: the tokens per-row sampling would pick, one argmax for the batch."""

from __future__ import annotations

import torch

from tuneforge.inference.sampling import batch_greedy, choose, make_generator
from tuneforge.inference.types import SamplingParams


def test_batch_greedy_picks_what_choose_picks_and_leaves_other_rows_to_it() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 1000)
    logits[3, 17] = logits[3, 99] = 50.0  # a tie: the first index, as torch.argmax gives
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.7, seed=1),  # sampled: not greedy
        SamplingParams(temperature=0, logprobs=True),  # needs log-probabilities: choose() does it
        SamplingParams(temperature=0, max_tokens=3),
        SamplingParams(temperature=0, presence_penalty=1.0),  # penalised: per row
    ]
    picked = batch_greedy(logits, params)
    assert picked[1] is None and picked[2] is None and picked[4] is None
    assert picked[3] == 17
    for i in (0, 3):
        token, _ = choose(logits[i], params[i], make_generator(0, torch.device("cpu")), {})
        assert picked[i] == token
    assert batch_greedy(logits[:2], [params[1], params[1]]) == [None, None]


def test_serving_device_and_dtype_choice() -> None:
    """CPU serves fp32 (batch-invariant greedy answers); CUDA serves bf16 where supported."""
    from tuneforge.inference.engine import pick_device

    assert pick_device("cpu") == (torch.device("cpu"), torch.float32)
    if not torch.cuda.is_available():
        assert pick_device("auto") == (torch.device("cpu"), torch.float32)
    else:
        device, dtype = pick_device("auto")
        assert device.type == "cuda"
        assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
