"""Direct Preference Optimization: `train(spec, reporter) -> TrainResult` for `method.type = "dpo"`.

One trainer per method: this one shares everything but the objective with sft.py (spec, model
loading, LoRA / full, the data order, reporter hooks, pause / resume state, per-epoch servable
checkpoints, the final model) by overriding its data step, its loop body and its evaluation.

The objective is TRL's `sigmoid` DPO loss, -log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r))),
where pi_* and ref_* are the summed log-probabilities of the chosen (preferred) and rejected
(non-preferred) outputs under the policy and the reference. The reference is the starting model
(for a new LoRA adapter, whose B matrices start at zero, that is the base model with the adapter
disabled; for an `ft:` model, its adapter or weights): its log-probabilities are computed once per
example before the first step and kept (a few floats per pair, written beside state/ so that a
resumed or recovered run uses the same reference), so no second model sits in memory.

Each pair is rendered as two chat examples (`data.preference_sides`) by the same renderer as SFT:
the label mask covers only the output turn, its terminator included. Chosen and rejected sides
are packed together as a tree (their shared prompt once, then each output on it: `PairRow`), so a
pair costs one forward over prompt + both outputs, and logits are computed at labelled positions
only.

Per-step metrics (events, step_metrics.csv, W&B) carry TRL's rewards: rewards = beta x (policy -
reference) log-probabilities of each side; accuracy = share of pairs whose chosen reward beats the
rejected one; margin = mean chosen minus rejected reward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tuneforge.errors import InvalidRequest
from tuneforge.training.batch_render import render_batch
from tuneforge.training.batches import position_ids, shifted_targets
from tuneforge.training.parallel import Parallel
from tuneforge.training.render import IGNORE_INDEX, Rendered, audit, stop_token_ids
from tuneforge.training.sft import (
    AUDIT_SAMPLE,
    MAX_GRAD_NORM,
    MICRO_BATCH_TOKENS,
    RENDER_BATCH,
    Cancelled,
    SftRun,
    load_examples,
)
from tuneforge.training.spec import Reporter, StopRequest, TrainResult, TrainSpec

REFERENCE_FILE = "dpo_reference.pt"  # reference log-probs, beside state/, removed when done
CSV_COLUMNS = (
    ("step", "step"),
    ("train_loss", "train_loss"),
    ("train_rewards_chosen", "train_rewards_chosen"),
    ("train_rewards_rejected", "train_rewards_rejected"),
    ("train_rewards_accuracy", "train_rewards_accuracy"),
    ("train_rewards_margin", "train_rewards_margin"),
    ("valid_loss", "valid_loss"),
    ("valid_rewards_accuracy", "valid_rewards_accuracy"),
    ("valid_rewards_margin", "valid_rewards_margin"),
)


def train(spec: TrainSpec, reporter: Reporter | None, parallel: Parallel | None = None) -> TrainResult:
    return _DpoRun(spec, reporter, parallel).execute()


# --- data ---------------------------------------------------------------------------------------


@dataclass
class Pair:
    chosen: Rendered
    rejected: Rendered
    index: int  # position in its set: the row of its reference log-probs

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated

    def __len__(self) -> int:  # tokens processed (and billed): both sides
        return len(self.chosen) + len(self.rejected)


def load_pairs(
    tokenizer,
    path: Path,
    max_seq_len: int | None,
    *,
    param: str = "training_file",
    audit_stop_ids: set[int] | None = None,
) -> list[Pair]:
    """Every preference pair of `path`, checked (a bad line is an InvalidRequest naming it) and
    rendered; `audit_stop_ids`: also check that trained spans end with one of these tokens."""
    from tuneforge.training.data import INVALID_FILE, check_preference_example, preference_sides

    examples = load_examples(path)
    for line, example in examples:
        problem = check_preference_example(example)
        if problem is not None:
            raise InvalidRequest(f"Line {line}: {problem.message}", code=INVALID_FILE, param=param)
    sides = [(line, side) for line, example in examples for side in preference_sides(example)]
    if audit_stop_ids is not None:
        audit(tokenizer, sides[: 2 * AUDIT_SAMPLE], stop_ids=audit_stop_ids)
    rendered: list[Rendered] = []
    for start in range(0, len(sides), RENDER_BATCH):
        chunk = sides[start : start + RENDER_BATCH]
        rendering = render_batch(tokenizer, [side for _, side in chunk], max_seq_len)
        for n, (line, _side) in enumerate(chunk):
            if rendering.rendered[n] is None:
                exc = rendering.errors[n]
                raise InvalidRequest(f"Line {line}: {exc.message}", code=exc.code, param=param)
            rendered.append(rendering.rendered[n])
    return [Pair(rendered[2 * i], rendered[2 * i + 1], i) for i in range(len(examples))]


@dataclass
class PairRow:
    """Pairs packed into one row. A pair whose sides are one sequence each is laid out as a tree:
    the prompt the two sides share once, then the chosen branch, then the rejected branch, each
    branch continuing the prompt's positions and attending to the prompt and to itself only. So
    the prompt costs one forward instead of two, and every token sees exactly the context it has
    in its own side: the log-probs are those of two separate sequences. (Sides of several
    sequences, templates rendered per turn, are laid out side by side, sharing nothing.)"""

    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    attention_mask: torch.Tensor  # [1, 1, T, T] bool: who attends to whom
    targets: torch.Tensor  # [T]: next token where trained, else IGNORE_INDEX
    sequence: torch.Tensor  # [T]: 2k for pair k's chosen tokens and shared prompt, 2k + 1 for its rejected
    shared: torch.Tensor  # [T] bool: pair k's shared prompt (a trained one counts for both sides)
    pairs: list[Pair]


def pack_pairs(pairs: list[Pair], max_tokens: int) -> list[PairRow]:
    """Greedy, order-preserving; a pair never spans two rows (a longer one gets its own)."""
    rows: list[list[Pair]] = []
    size = 0
    for pair in pairs:
        n = len(pair) - _shared_len(pair)
        if rows and size + n <= max_tokens:
            rows[-1].append(pair)
            size += n
        else:
            rows.append([pair])
            size = n
    return [_pair_row(row) for row in rows]


def _shared_len(pair: Pair) -> int:
    """Leading tokens both sides can share: their common prefix but its last token, whose target
    (the first token that differs) is each side's own. 0 for sides of several sequences."""
    c, r = pair.chosen, pair.rejected
    if c.seq_lens is not None or r.seq_lens is not None:
        return 0
    n = 0
    for a, b, la, lb in zip(c.input_ids, r.input_ids, c.labels, r.labels, strict=False):
        if a != b or la != lb:
            break
        n += 1
    return max(0, n - 1)


def _pair_row(row: list[Pair]) -> PairRow:
    ids: list[int] = []
    pos: list[int] = []
    tgt: list[int] = []
    seq: list[int] = []
    shared: list[bool] = []
    blocks: list[list[int]] = []  # per group of tokens that attend to each other: branch of each
    for k, pair in enumerate(row):
        n = _shared_len(pair)
        if n:
            c_pos, c_tgt = position_ids(pair.chosen), shifted_targets(pair.chosen)
            r_pos, r_tgt = position_ids(pair.rejected), shifted_targets(pair.rejected)
            ids += pair.chosen.input_ids + pair.rejected.input_ids[n:]
            pos += c_pos + r_pos[n:]
            tgt += c_tgt + r_tgt[n:]
            lc, lr = len(pair.chosen) - n, len(pair.rejected) - n
            seq += [2 * k] * (n + lc) + [2 * k + 1] * lr
            shared += [True] * n + [False] * (lc + lr)
            blocks.append([0] * n + [1] * lc + [2] * lr)
            continue
        for side, r in enumerate((pair.chosen, pair.rejected)):
            for part in r.sequences():  # each its own context, positions from 0
                ids += part.input_ids
                pos += list(range(len(part)))
                tgt += shifted_targets(part)
                seq += [2 * k + side] * len(part)
                shared += [False] * len(part)
                blocks.append([0] * len(part))
    mask = torch.zeros(len(ids), len(ids), dtype=torch.bool)
    causal = torch.ones(max(map(len, blocks)), max(map(len, blocks)), dtype=torch.bool).tril()
    start = 0
    for block in blocks:
        n = len(block)
        allowed = causal[:n, :n]
        if block[-1]:  # a tree: a branch (1, 2) sees the shared prompt (0) and itself, not the other
            b = torch.tensor(block)
            allowed = allowed & ((b[None, :] == 0) | (b[None, :] == b[:, None]))
        mask[start : start + n, start : start + n] = allowed
        start += n
    return PairRow(
        torch.tensor([ids]),
        torch.tensor([pos]),
        mask[None, None],
        torch.tensor(tgt),
        torch.tensor(seq),
        torch.tensor(shared),
        row,
    )


# --- the objective ------------------------------------------------------------------------------


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float):
    """TRL's sigmoid DPO loss. `policy`, `reference`: [n, 2] summed log-probs (chosen, rejected).
    -> (per-pair losses, chosen rewards, rejected rewards), the rewards detached."""
    logits = (policy[:, 0] - policy[:, 1]) - (reference[:, 0] - reference[:, 1])
    losses = -F.logsigmoid(beta * logits)
    rewards = beta * (policy - reference).detach()
    return losses, rewards[:, 0], rewards[:, 1]


def pair_logps(model, row: PairRow, device: torch.device, *, bf16: bool = False) -> torch.Tensor:
    """[pairs, 2] summed log-probs of each side's trained tokens under `model` (one forward)."""
    targets = row.targets.to(device)
    # Logits only where a target exists (the output turns): the output layer and the fp32
    # log-softmax then cost a fraction of the whole row's.
    keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(
            input_ids=row.input_ids.to(device),
            position_ids=row.position_ids.to(device),
            attention_mask=row.attention_mask.to(device),
            use_cache=False,
            logits_to_keep=keep,
        ).logits[0]
    token_logps = -F.cross_entropy(logits.float(), targets[keep], reduction="none")
    sequence, shared = row.sequence.to(device)[keep], row.shared.to(device)[keep]
    sums = torch.zeros(2 * len(row.pairs), device=device, dtype=token_logps.dtype)
    sums = sums.index_add(0, sequence, token_logps)
    if bool(shared.any()):  # a trained token of a shared prompt is in both sides
        sums = sums.index_add(0, sequence[shared] + 1, token_logps[shared])
    return sums.view(-1, 2)


class _Sums:
    """Sums over pairs, for a step's or an evaluation's means."""

    def __init__(self) -> None:
        self.n = 0
        self.loss = self.chosen = self.rejected = self.correct = 0.0

    def add(self, losses: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self.n += len(losses)
        self.loss += losses.detach().sum().item()
        self.chosen += chosen.sum().item()
        self.rejected += rejected.sum().item()
        self.correct += (chosen > rejected).sum().item()

    def summed(self, parallel: Parallel) -> _Sums:
        """These sums added up over the ranks of a data-parallel run."""
        self.n, self.loss, self.chosen, self.rejected, self.correct = parallel.sum(
            self.n, self.loss, self.chosen, self.rejected, self.correct
        )
        return self

    def metrics(self, prefix: str) -> dict[str, float]:
        n = max(1, self.n)
        return {
            f"{prefix}_loss": self.loss / n,
            f"{prefix}_rewards_chosen": self.chosen / n,
            f"{prefix}_rewards_rejected": self.rejected / n,
            f"{prefix}_rewards_accuracy": self.correct / n,
            f"{prefix}_rewards_margin": (self.chosen - self.rejected) / n,
        }


# --- the run ------------------------------------------------------------------------------------


class _DpoRun(SftRun):
    def _setup_data(self) -> None:
        spec = self.spec
        stop_ids = stop_token_ids(self.tokenizer, self.generation_config)
        self.train_set = load_pairs(
            self.tokenizer, spec.training_file, self.max_seq_len, audit_stop_ids=stop_ids
        )
        if not self.train_set:
            raise InvalidRequest(
                "The training file has no examples.", code="invalid_n_examples", param="training_file"
            )
        self.valid_set = []
        if spec.validation_file is not None:
            self.valid_set = load_pairs(
                self.tokenizer, spec.validation_file, self.max_seq_len, param="validation_file"
            )
        n_cut = sum(p.truncated for p in self.train_set)
        if n_cut:
            self.reporter.event(
                f"{n_cut} training pairs have a side longer than {self.max_seq_len} tokens, truncated.",
                level="warn",
            )
        # A pair fits one row whatever its length: both sides are in the same forward.
        self.row_tokens = max(MICRO_BATCH_TOKENS, 2 * self.max_seq_len)

    def execute(self) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self._setup()
        self.beta = float(self.hp.beta)
        self.step = self.start_step
        self.csv = self._metrics_csv(columns=CSV_COLUMNS)
        try:
            self._setup_reference()  # a cancel during its pass is a cancel like any other
            result = self._loop()
        except Cancelled:
            result = self._result("cancelled", self.step)
        finally:
            self.csv.close()
        return self._ended(result)

    def _setup_reference(self) -> None:
        """The reference log-probs: computed with the starting weights on a fresh run, read back
        on a resumed one (whose model already moved)."""
        path = self.out / REFERENCE_FILE
        if self.progress is not None:
            if not path.is_file():
                raise InvalidRequest(
                    "state/ has no DPO reference log-probs to resume with.", code="resume_mismatch"
                )
            self.reference = torch.load(path)
            if (len(self.reference["train"]), len(self.reference["valid"])) != (
                len(self.train_set),
                len(self.valid_set),
            ):
                raise InvalidRequest(
                    "The DPO reference log-probs in the output directory belong to other files.",
                    code="resume_mismatch",
                )
            return
        self.reference = {"train": self._logps(self.train_set), "valid": self._logps(self.valid_set)}
        if not self.parallel.is_main:
            return
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.reference, tmp)
        os.replace(tmp, path)

    @torch.no_grad()
    def _logps(self, pairs: list[Pair]) -> torch.Tensor:
        self.model.eval()
        out = torch.zeros(len(pairs), 2, dtype=torch.float32)
        for row in self.parallel.turns(pack_pairs(pairs, self.row_tokens)):
            self._poll_stop()
            if row is not None:
                out[[p.index for p in row.pairs]] = self._pair_logps(row).float().cpu()
            elif self.parallel.sharded:  # a forward in step with the other ranks
                self._pair_logps(self._filler())
        self.model.train()
        return self.parallel.sum_(out)  # each rank filled its rows, zeros elsewhere

    def _pair_logps(self, row: PairRow) -> torch.Tensor:
        return pair_logps(self.model, row, self.device, bf16=self.bf16)

    def _filler(self) -> PairRow:
        """(sharded) A row for a forward without work of its own: the shortest pair."""
        if not hasattr(self, "_filler_pair"):
            self._filler_pair = pack_pairs([min(self.train_set, key=len)], self.row_tokens)[0]
        return self._filler_pair

    def _reference_of(self, row: PairRow, split: str) -> torch.Tensor:
        return self.reference[split][[p.index for p in row.pairs]].to(self.device)

    def _poll_stop(self) -> None:
        stop = self.reporter.stop_requested()
        if stop == StopRequest.CANCEL:
            raise Cancelled
        if stop == StopRequest.PAUSE:
            self.pending_pause = True  # finish this pass, pause before the next step

    # SFT's loop (sft.py) with DPO's measurements: reward metrics, no epoch samples.
    def _step_metrics(self, batch: list[Pair]) -> dict[str, float]:
        return self._train_step(batch)

    def _valid_metrics(self, examples: list[Pair], prefix: str) -> dict[str, float]:
        v = self._evaluate(examples)
        return {
            f"{prefix}loss": v["valid_loss"],
            f"{prefix}rewards_accuracy": v["valid_rewards_accuracy"],
            f"{prefix}rewards_margin": v["valid_rewards_margin"],
        }

    def _after_epoch(self, epoch: int) -> None:
        pass  # no sampled answers for preference pairs

    def _train_step(self, batch: list[Pair]) -> dict[str, float]:
        self.model.train()
        sums = _Sums()
        rows = pack_pairs(self.parallel.share(batch), self.row_tokens)
        for row, real in self.parallel.rounds(rows, self._filler):
            if not real:  # (sharded: a forward and backward in step with the other ranks)
                (self._pair_logps(row).sum() * 0.0).backward()
                continue
            losses, chosen, rejected = dpo_loss(
                self._pair_logps(row), self._reference_of(row, "train"), self.beta
            )
            (losses.sum() / len(batch)).backward()  # the mean over the (whole) step's pairs
            sums.add(losses, chosen, rejected)
        self.parallel.sync_grads(self.params)
        sums.summed(self.parallel)
        self.parallel.clip_grads(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums.metrics("train")

    @torch.no_grad()
    def _evaluate(self, pairs: list[Pair]) -> dict[str, float]:
        self.model.eval()
        sums = _Sums()
        for row in self.parallel.turns(pack_pairs(pairs, self.row_tokens)):
            self._poll_stop()
            if row is not None:
                sums.add(*dpo_loss(self._pair_logps(row), self._reference_of(row, "valid"), self.beta))
            elif self.parallel.sharded:  # a forward in step with the other ranks
                self._pair_logps(self._filler())
        self.model.train()
        return sums.summed(self.parallel).metrics("valid")

    def _finish(self) -> TrainResult:
        result = super()._finish()
        if self.parallel.is_main:
            (self.out / REFERENCE_FILE).unlink(missing_ok=True)
        return result


__all__ = ["Pair", "dpo_loss", "load_pairs", "pack_pairs", "pair_logps", "train"]
