"""Supervised fine-tuning: `train(spec, reporter) -> TrainResult` (see spec.py for the contract).

An own loop (about 300 lines) rather than TRL's SFTTrainer, because what this engine must
guarantee sits exactly where a Trainer subclass would have to override internals:
- exact pause/resume: the state/ dir holds the trainable weights, optimizer, scheduler, RNG and
  the step, and the data order is a pure function of (seed, epoch), so a resumed run reproduces an
  uninterrupted one bit for bit on CPU (tested with torch.equal);
- padding-free packing with per-example position_ids for every batch (`batches.py`), on CPU too;
- loss normalised over the label tokens of the whole optimizer step (sum over micro-batches
  divided by the step's label count), and accuracy over the same tokens;
- reporter hooks between optimizer steps (cancel within one step, pause), OpenAI's per-step
  metrics, sampled and full validation, per-epoch servable checkpoints with pruning.
The benchmark (benchmarks/) compares it with TRL on the same data.

Precision: bf16 autocast where `hardware.bf16_is_fast` measures it faster for the model's matmul
shapes (cached per machine): CUDA with bf16, AMX Xeons, AVX512-BF16 EPYCs (2048x2048: ~2.6x fp32
there); fp32 where bf16 is emulated. On CUDA a LoRA base is stored in bf16 (adapters fp32). On CPU
embeddings, norms and the residual stream stay fp32 (a whole-bf16 frozen base was 5x slower on an
AMX Xeon: the ops autocast leaves alone ran in bf16 without native kernels); only a LoRA's frozen
linear weights are stored in bf16, which is what autocast rounds them to for each matmul anyway
(`hardware.linears_to_bf16`), minus a cast per step and half their memory. Full fine-tuning keeps
fp32 master weights. A resumed run keeps the precision it started with. Logits are computed only at label positions.
Packing beats padding (padded bf16 batches: sdpa falls back to a slow path with a padding mask);
a packed row attends per sequence (attention.py), not through a T x T block-diagonal mask.
Determinism on CPU: seeded RNG, a fixed thread count (all CPUs this process may use), no
data-dependent kernels.

Setup runs in named steps (`_setup_device`, `_setup_tokenizer`, `_setup_data`, `_setup_progress`,
`_setup_precision`, `_setup_model`, `_setup_optimizer`, `_setup_scheduler`, `_restore_state`) so
another method (DPO) or a distributed run overrides one step, not a long method. At each epoch end
the model answers a few held prompts (greedy, short): an event "Epoch N samples" whose data is
{"epoch", "samples": [{"prompt", "expected", "answer"}]}.

Optional reporter hooks (duck-typed, not part of the Reporter protocol): `throughput(tokens,
seconds)` after each step, for progress bars; `state_saved(output_dir, step)` after state/ is
written, for a job to publish it where another machine can resume (jobs/job_state.py).

Data parallel: the same run with N processes (`parallel.Parallel`: each step's batch dealt to the
ranks, loss normalised over the whole step's label tokens, gradients summed across ranks; only
rank 0 reports and writes) computes what one process computes on the same global batch. A full
fine-tune over several ranks is sharded (FSDP, `_setup_sharding`): every rank then runs each
forward and backward in step with the others (`Parallel.rounds`, a filler row where it has none)
and saving gathers the weights whole first.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.errors import InvalidRequest, TuneforgeError
from tuneforge.hardware import bf16_is_fast, linears_to_bf16, model_shape
from tuneforge.training import accel, attention
from tuneforge.training import checkpoints as ckpt
from tuneforge.training.batch_render import render_batch
from tuneforge.training.batches import Packed, n_targets, pack
from tuneforge.training.hparams import learning_rate, resolve
from tuneforge.training.parallel import Parallel
from tuneforge.training.render import (
    IGNORE_INDEX,
    Rendered,
    audit,
    ensure_chat_template,
    stop_token_ids,
)
from tuneforge.training.spec import (
    CHECKPOINT_META,
    Reporter,
    ResolvedHyperparameters,
    StopRequest,
    TrainResult,
    TrainSpec,
)

MAX_SEQ_LEN_CAP = 8192  # default context when the model's own limit is larger
AUDIT_SAMPLE = 32  # examples rendered and checked before training starts
RENDER_BATCH = 256  # examples rendered (tokenized) per call
MICRO_BATCH_TOKENS = 8192  # tokens per packed row (a longer example gets a row of its own)
VALID_BATCH_MIN = 8  # examples in a sampled validation batch (at least batch_size)
VALID_EVALS_PER_RUN = 5  # sampled validations over the run, at most every 2nd step (+ epoch ends)
WARMUP_FRACTION = 0.03
EPOCH_SAMPLES = 3  # validation prompts answered (greedy) at each epoch end
SAMPLE_MAX_TOKENS = 32  # tokens per sample answer: enough to see the format, cheap
MAX_GRAD_NORM = 1.0


class Cancelled(Exception):
    """A stop request seen mid-step (the DPO trainer raises it too)."""


def train(spec: TrainSpec, reporter: Reporter | None, parallel: Parallel | None = None) -> TrainResult:
    """`reporter` may be None on ranks other than 0 of a data-parallel run (they report nothing)."""
    return SftRun(spec, reporter, parallel).execute()


def load_examples(path: Path) -> list[tuple[int, dict]]:
    from tuneforge.training.data import DataFileError, iter_examples

    try:
        return list(iter_examples(path))
    except DataFileError as exc:
        raise InvalidRequest(str(exc), code=exc.code, param=exc.param) from exc


def _render_all(tokenizer, examples: list[tuple[int, dict]], max_seq_len: int) -> list[Rendered]:
    out = []
    for start in range(0, len(examples), RENDER_BATCH):
        chunk = examples[start : start + RENDER_BATCH]
        rendering = render_batch(tokenizer, [example for _, example in chunk], max_seq_len)
        for n, ((line, _example), rendered) in enumerate(zip(chunk, rendering.rendered)):
            if rendered is None:
                exc = rendering.errors[n]
                raise InvalidRequest(f"Line {line}: {exc.message}", code=exc.code, param=exc.param) from exc
            out.append(rendered)
    return out


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def sample_prompts(examples: list[tuple[int, dict]], k: int = EPOCH_SAMPLES) -> list[dict]:
    """Up to `k` (prompt messages, expected answer) pairs for the epoch-end samples: each example
    up to its last assistant turn, when that turn is plain text."""
    out = []
    for _line, example in examples:
        messages = example.get("messages") or []
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or not isinstance(messages[last].get("content"), str) or last == 0:
            continue
        prompt = messages[:last]
        user = next((m.get("content") for m in reversed(prompt) if m.get("role") == "user"), None)
        out.append(
            {
                "messages": prompt,
                "tools": example.get("tools"),
                "prompt": user if isinstance(user, str) else str(user),
                "expected": messages[last]["content"],
            }
        )
        if len(out) == k:
            break
    return out


class SftRun:
    """One training run, set up in named steps (torchtune-style) that other methods reuse."""

    def __init__(self, spec: TrainSpec, reporter: Reporter | None, parallel: Parallel | None = None):
        self.spec = spec
        self.parallel = parallel or Parallel()
        self.reporter = self.parallel.reporter(reporter)
        self.out = Path(spec.output_dir)
        self.pending_pause = False

    # --- setup, in order: each step reads what the ones before it set ----------------------------

    def _setup(self) -> None:
        self._setup_device()
        self._setup_tokenizer()
        self._setup_data()
        self._setup_progress()
        self._setup_precision()
        random.seed(self.spec.seed)
        torch.manual_seed(self.spec.seed)
        self.model = self._setup_sharding(self._setup_model())
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._setup_optimizer()
        self.scheduler = self._setup_scheduler()
        self._restore_state()

    def _setup_device(self) -> None:
        # a Ray rank is given its share of the CPUs; else the setting; else every CPU
        torch.set_num_threads(self.parallel.threads or self.spec.threads or _cpu_count())
        self.device = torch.device(self.spec.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _setup_tokenizer(self) -> None:
        """The tokenizer (with a chat template), the model config, context length, stop tokens."""
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        base = Path(self.spec.base_model).expanduser()
        self.base_ref = str(base.resolve()) if base.is_dir() else self.spec.base_model
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_ref)
        if ensure_chat_template(self.tokenizer):
            self.reporter.event(
                "The base model has no chat template: using tuneforge's default "
                "ChatML template, terminated by the EOS token.",
                level="warn",
            )
        self.model_config = AutoConfig.from_pretrained(self.base_ref)
        limit = getattr(self.model_config, "max_position_embeddings", None) or 2048
        self.max_seq_len = self.spec.max_seq_len or min(limit, MAX_SEQ_LEN_CAP)
        try:
            self.generation_config = GenerationConfig.from_pretrained(self.base_ref)
        except OSError:
            self.generation_config = None
        self.stop_ids = stop_token_ids(self.tokenizer, self.generation_config)

    def _setup_data(self) -> None:
        """self.train_set / self.valid_set: what one step's batch and an evaluation draw from
        (rendered examples here; dpo.py's override renders preference pairs), and the prompts
        of the epoch-end samples."""
        spec = self.spec
        train_examples = load_examples(spec.training_file)
        if not train_examples:
            raise InvalidRequest(
                "The training file has no examples.", code="invalid_n_examples", param="training_file"
            )
        audit(self.tokenizer, train_examples[:AUDIT_SAMPLE], stop_ids=self.stop_ids)
        self.train_set = _render_all(self.tokenizer, train_examples, self.max_seq_len)
        self.valid_set: list[Rendered] = []
        valid_examples: list[tuple[int, dict]] = []
        if spec.validation_file is not None:
            valid_examples = load_examples(spec.validation_file)
            self.valid_set = _render_all(self.tokenizer, valid_examples, self.max_seq_len)
        # Epoch-end samples: validation prompts, else the first training ones (holding examples
        # back from training would change what is trained and billed).
        self.samples = sample_prompts(valid_examples) or sample_prompts(train_examples)
        n_cut = sum(r.truncated for r in self.train_set)
        if n_cut:
            self.reporter.event(
                f"{n_cut} training examples are longer than {self.max_seq_len} tokens and were truncated.",
                level="warn",
            )

    def _setup_progress(self) -> None:
        """Hyperparameters and the step plan: resolved now, or as saved by the run we resume."""
        spec = self.spec
        self.progress = ckpt.read_progress(self.out)
        # Each rank reads state/ itself: one that resumed from another step than rank 0 would run
        # other steps, its collectives paired with the wrong ones. An error on every rank instead.
        mine = -1 if self.progress is None else int(self.progress["step"])
        main = int(self.parallel.from_main(mine))
        if self.parallel.max(float(mine != main)):
            raise TuneforgeError(
                f"The ranks of this run read different saved states: rank 0 step {main}, "
                f"rank {self.parallel.rank} step {mine} (-1: none).",
                code="resume_mismatch",
            )
        n = len(self.train_set)
        if self.progress is not None:
            if (self.progress["n_examples"], self.progress["method"], self.progress["seed"]) != (
                n,
                spec.method,
                spec.seed,
            ):
                raise InvalidRequest(
                    "state/ in the output directory belongs to a different run "
                    "(examples, method or seed differ).",
                    code="resume_mismatch",
                )
            self.hp = ResolvedHyperparameters(**self.progress["hyperparameters"])
        else:
            self.hp = resolve(spec.hyperparameters, n, spec.method_type)
        self.reporter.hyperparameters(self.hp)
        self.steps_per_epoch = math.ceil(n / self.hp.batch_size)
        self.total_steps = self.steps_per_epoch * self.hp.n_epochs

    def _setup_precision(self) -> None:
        """bf16 autocast where it is measured faster for this model's shapes (hardware.py); a
        resumed run keeps the precision it started with, so it stays bit-identical."""
        saved = (self.progress or {}).get("bf16")
        if saved is not None:
            self.bf16 = bool(saved)
        else:
            self.bf16 = bf16_is_fast(self.device, *model_shape(self.model_config))
        # Ranks on different machines could measure differently: all use rank 0's choice.
        self.bf16 = bool(self.parallel.from_main(float(self.bf16)))

    def _setup_model(self):
        from transformers import AutoModelForCausalLM

        spec = self.spec
        # On CPU, norms, embeddings and the residual stream stay fp32 under autocast; a LoRA's
        # frozen linear weights are stored in bf16 (below). On CUDA a LoRA base is stored in bf16.
        cuda_bf16 = self.bf16 and self.device.type == "cuda"
        dtype = torch.bfloat16 if (cuda_bf16 and spec.method == "lora") else torch.float32
        impl = accel.attn_implementation(self.device)
        # sdpa, with packed rows attending per sequence (attention.py); FlashAttention is varlen already
        self.packed_attention = impl == "sdpa"
        model = AutoModelForCausalLM.from_pretrained(
            self.base_ref,
            dtype=dtype,
            attn_implementation=attention.register() if self.packed_attention else impl,
        )
        if self.generation_config is not None:
            model.generation_config = self.generation_config
        if spec.method == "lora":
            from peft import LoraConfig, PeftModel, get_peft_model

            if spec.init_adapter is not None:
                model = PeftModel.from_pretrained(model, str(spec.init_adapter), is_trainable=True)
            else:
                model = get_peft_model(
                    model,
                    LoraConfig(
                        r=spec.lora_rank,
                        lora_alpha=spec.lora_alpha,
                        lora_dropout=spec.lora_dropout,
                        target_modules="all-linear",
                        task_type="CAUSAL_LM",
                    ),
                )
        elif spec.method != "full":
            raise InvalidRequest(f"Unknown method {spec.method!r}: use 'lora' or 'full'.", param="method")
        model.config.use_cache = False
        if self.bf16 and self.device.type == "cpu" and spec.method == "lora":
            # The frozen base, rounded to bf16 once: what autocast computes each step anyway.
            linears_to_bf16(model, skip_trainable=True)
        if not self.parallel.shards(spec.method):  # (sharded: each rank moves only its shards)
            model = model.to(self.device)
        self._setup_speed(model)
        return model

    def _setup_speed(self, model) -> None:
        """The GPU path's choices (accel.py): fused loss, gradient checkpointing, compile. Each is
        off on CPU unless asked for, so CPU runs compute what they always did."""
        spec = self.spec
        self.fused_loss = None
        # (not sharded: it calls the decoder and reads the output layer's weight outside the
        # model's forward, where FSDP gathers them)
        if accel.use_fused_loss(self.device, spec.fused_loss) and not self.parallel.shards(spec.method):
            self.fused_loss = accel.FusedLoss(self.device, torch.bfloat16 if self.bf16 else torch.float32)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        tokens = max(MICRO_BATCH_TOKENS, self.max_seq_len)
        self.checkpointing = accel.want_checkpointing(
            spec.gradient_checkpointing,
            self.device,
            free_bytes=accel.free_memory(self.device),
            activations=accel.activation_bytes(self.model_config, tokens),
            trainable_params=trainable,
        )
        if self.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if spec.torch_compile:
            accel.compile_layers(model)
        if self.device.type == "cuda":
            self.reporter.event(
                f"GPU: {torch.cuda.get_device_name(self.device)}, "
                f"{'bf16 autocast' if self.bf16 else 'fp32'}, "
                f"attention {model.config._attn_implementation}, "
                f"loss {self.fused_loss.kind if self.fused_loss else 'label logits'}, "
                f"gradient checkpointing {'on' if self.checkpointing else 'off'}"
                f"{', torch.compile' if spec.torch_compile else ''}."
            )

    def _setup_sharding(self, model):
        """A full fine-tune over several ranks: weights, gradients and Adam state sharded per decoder
        layer (parallel.uses_fsdp, training/fsdp.py), before the optimizer sees the parameters."""
        model = self.parallel.shard(model, self.device, self.spec.method)
        if self.parallel.sharded:
            from tuneforge.training.fsdp import local_numel

            mine = local_numel(model.parameters())
            most = self.parallel.max(mine)
            total = sum(p.numel() for p in model.parameters())
            self.reporter.event(
                f"Sharded (FSDP) over {self.parallel.world} ranks: each holds at most {int(most):,} of "
                f"the {total:,} weights, and their gradients and optimizer state.",
                data={
                    "sharding": "fsdp",
                    "ranks": self.parallel.world,
                    "params": total,
                    "max_params_per_rank": int(most),
                },
            )
        return model

    def _setup_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.params, lr=learning_rate(self.spec.method, self.hp), betas=(0.9, 0.999), weight_decay=0.0
        )

    def _setup_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        warmup = max(1, int(WARMUP_FRACTION * self.total_steps))
        total = self.total_steps

        def schedule(s: int) -> float:  # linear warmup, then linear decay to 0
            return (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def _restore_state(self) -> None:
        self.start_step = 0
        self.trained_tokens = 0
        if self.progress is not None:
            ckpt.load_state(
                self.out,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                place=self.parallel.place_state(),
            )
            self.start_step = self.progress["step"]
            self.trained_tokens = self.progress["trained_tokens"]
            self.reporter.event(f"Resuming from step {self.start_step}/{self.total_steps}.")

    # --- the loop -----------------------------------------------------------------------------

    def execute(self) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self._setup()
        self.csv = self._metrics_csv()
        try:
            result = self._loop()
        except Cancelled:
            result = self._result("cancelled", self.step)
        finally:
            self.csv.close()
        return self._ended(result)

    def _ended(self, result: TrainResult) -> TrainResult:
        """`result`, once every rank is here: rank 0 has written state/ (a pause) or final/. Else a
        rank that went straight on to the next run in this output directory (a resume) could read
        state/ before it exists, start at step 0 while rank 0 resumes, and the two would wait in
        collectives that never pair up (a hang)."""
        self.parallel.barrier()
        return result

    def _metrics_csv(self, **columns: Any) -> ckpt.MetricsCsv | ckpt.NoMetricsCsv:
        if not self.parallel.is_main:
            return ckpt.NoMetricsCsv()
        return ckpt.MetricsCsv(self.out / "step_metrics.csv", keep_up_to=self.start_step, **columns)

    def _loop(self) -> TrainResult:
        spe, bs = self.steps_per_epoch, self.hp.batch_size
        eval_every = max(2, self.total_steps // VALID_EVALS_PER_RUN)
        self.step = self.start_step
        while self.step < self.total_steps:
            stop = self.reporter.stop_requested()
            if stop == StopRequest.CANCEL:
                return self._result("cancelled", self.step)
            if stop == StopRequest.PAUSE or self.pending_pause:
                self._save_state()
                return self._result("paused", self.step)
            epoch, i = divmod(self.step, spe)
            order = self._epoch_order(epoch)
            batch = [self.train_set[j] for j in order[i * bs : (i + 1) * bs]]
            started = time.perf_counter()
            m: dict[str, Any] = {
                "step": self.step + 1,
                "total_steps": self.total_steps,
                **self._step_metrics(batch),
            }
            # Billable tokens, as OpenAI counts them: every token of the (truncated) examples
            # processed, not only the trained labels; the validator's estimate counts the same.
            self.trained_tokens += sum(len(r) for r in batch)
            self.step += 1
            epoch_end = self.step % spe == 0
            if self.valid_set and (self.step % eval_every == 0 or epoch_end):
                m.update(self._valid_metrics(self._valid_sample(), "valid_"))
            if self.valid_set and epoch_end:
                m.update(self._valid_metrics(self.valid_set, "full_valid_"))
            self.csv.write(m)
            self.reporter.metrics(m)
            hook = getattr(self.reporter, "throughput", None)
            if hook is not None:
                hook(sum(len(r) for r in batch), time.perf_counter() - started)
            if epoch_end:
                self._epoch_checkpoint(epoch + 1, m)
                self._after_epoch(epoch + 1)
                self._save_state()
        return self._finish()

    # --- what a method measures (DPO overrides these three) ----------------------------------

    def _step_metrics(self, batch: list[Rendered]) -> dict[str, float]:
        """One optimizer step on `batch`; its training metrics under OpenAI's names."""
        loss, acc = self._train_step(batch)
        return {"train_loss": loss, "train_mean_token_accuracy": acc}

    def _valid_metrics(self, examples: list[Rendered], prefix: str) -> dict[str, float]:
        loss, acc = self._evaluate(examples)
        return {f"{prefix}loss": loss, f"{prefix}mean_token_accuracy": acc}

    def _after_epoch(self, epoch: int) -> None:
        self._epoch_samples(epoch)

    def _epoch_order(self, epoch: int) -> list[int]:
        # A pure function of (seed, epoch): a resumed run sees the same order without saving it.
        g = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_set), generator=g).tolist()

    def _valid_sample(self) -> list[Rendered]:
        k = min(len(self.valid_set), max(self.hp.batch_size, VALID_BATCH_MIN))
        g = torch.Generator().manual_seed(self.spec.seed * 7_919 + self.step)
        return [self.valid_set[j] for j in torch.randperm(len(self.valid_set), generator=g)[:k].tolist()]

    def _forward(self, row: Packed):
        """(summed cross-entropy, correct argmax count) over the row's label positions."""
        ids = row.input_ids.to(self.device)
        targets = row.targets.to(self.device)[0]
        # Logits only where a target exists: the output layer (a 49k-word vocabulary is a quarter
        # of a small model's FLOPs) and the fp32 loss then cost a fraction on chat data, whose
        # prompts carry no labels.
        keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
        # No attention mask: each packed sequence attends to itself (attention.py, or
        # FlashAttention's varlen path from the position resets).
        bounds = {"cu_seq_lens_q": attention.cu_seq_lens(row.lengths)} if self.packed_attention else {}
        if self.fused_loss is not None:  # the GPU path: no logits tensor at all
            return accel.fused_row_loss(
                self.model,
                ids,
                row.position_ids.to(self.device),
                keep,
                targets[keep],
                bf16=self.bf16,
                loss=self.fused_loss,
                **bounds,
            )
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(
                input_ids=ids,
                position_ids=row.position_ids.to(self.device),
                use_cache=False,
                logits_to_keep=keep,
                **bounds,
            ).logits[0]
        kept = targets[keep]
        logits = logits.float()  # the loss in fp32 (and argmax: ~3x faster than on bf16 on CPU)
        loss_sum = F.cross_entropy(logits, kept, reduction="sum")
        correct = (logits.argmax(-1) == kept).sum().item()
        return loss_sum, correct

    def _train_step(self, batch: list[Rendered]) -> tuple[float, float]:
        self.model.train()
        rows = pack(self.parallel.share(batch), max(MICRO_BATCH_TOKENS, self.max_seq_len))
        # The whole step's label tokens: every rank's share counted.
        (n_tok,) = self.parallel.sum(sum(r.n_targets for r in rows))
        total_loss, total_correct = 0.0, 0
        trained = [row for row in rows if row.n_targets]
        for row, real in self.parallel.rounds(trained, self._filler):
            loss_sum, correct = self._forward(row)
            if not real:  # (sharded: a forward and backward in step with the other ranks)
                (loss_sum * 0.0).backward()
                continue
            # Normalise by the whole step's label tokens, not per micro-batch.
            (loss_sum / n_tok).backward()
            total_loss += loss_sum.item()
            total_correct += correct
        if n_tok:  # (no label anywhere: no gradient on any rank, as in one process)
            self.parallel.sync_grads(self.params)
        total_loss, total_correct = self.parallel.sum(total_loss, total_correct)
        self.parallel.clip_grads(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if n_tok == 0:
            return 0.0, 0.0
        return total_loss / n_tok, total_correct / n_tok

    @torch.no_grad()
    def _evaluate(self, examples: list[Rendered]) -> tuple[float, float]:
        self.model.eval()
        total_loss, total_correct, n_tok = 0.0, 0, 0
        for row in self.parallel.turns(pack(examples, max(MICRO_BATCH_TOKENS, self.max_seq_len))):
            stop = self.reporter.stop_requested()
            if stop == StopRequest.CANCEL:
                raise Cancelled
            if stop == StopRequest.PAUSE:
                self.pending_pause = True  # finish this evaluation, pause before the next step
            if row is None or row.n_targets == 0:
                if self.parallel.sharded:  # a forward in step with the other ranks, not counted
                    self._forward(self._filler())
                continue
            loss_sum, correct = self._forward(row)
            total_loss += loss_sum.item()
            total_correct += correct
            n_tok += row.n_targets
        self.model.train()
        total_loss, total_correct, n_tok = self.parallel.sum(total_loss, total_correct, n_tok)
        return (total_loss / n_tok, total_correct / n_tok) if n_tok else (0.0, 0.0)

    def _filler(self) -> Any:
        """A row for a sharded rank's forward without work of its own: the shortest trained
        example (its loss is multiplied by 0)."""
        if not hasattr(self, "_filler_row"):
            shortest = min((r for r in self.train_set if n_targets(r)), key=len)
            self._filler_row = pack([shortest], max(MICRO_BATCH_TOKENS, self.max_seq_len))[0]
        return self._filler_row

    @torch.no_grad()
    def _epoch_samples(self, epoch: int) -> None:
        """What the model answers now: greedy, short, to a few held prompts (an event the job
        page shows beside the charts). Greedy decoding draws no random numbers, so training's
        RNG stream (and a resumed run's bit identity) is untouched."""
        sharded = self.parallel.sharded  # then every rank runs each forward: all generate
        if not getattr(self, "samples", None) or not (self.parallel.is_main or sharded):
            return  # (others: no one reads them)
        self.model.eval()
        self.model.config.use_cache = True
        stops = sorted(self.stop_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (stops or [0])[0]
        prompts = [
            self.tokenizer.apply_chat_template(
                sample["messages"],
                tools=sample["tools"],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )["input_ids"][-self.max_seq_len :]
            for sample in self.samples
        ]
        # One batch, left-padded (masked), not one generate per prompt: decoding a few short
        # answers is many small ops, and a batch pays for them once.
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=SAMPLE_MAX_TOKENS,
                    do_sample=False,
                    eos_token_id=stops or None,
                    pad_token_id=pad,
                    use_cache=True,
                    # sharded: each forward gathers layers from every rank, so a rank whose
                    # answers ended keeps running forwards until all have (HF's ZeRO-3 mode)
                    synced_gpus=sharded,
                )
        finally:
            self.model.config.use_cache = False
            self.model.train()
        rows = [
            {"prompt": sample["prompt"], "expected": sample["expected"], "answer": self._answer(tokens)}
            for sample, tokens in zip(self.samples, out[:, width:].tolist())
        ]
        self.reporter.event(f"Epoch {epoch} samples", data={"epoch": epoch, "samples": rows})

    def _answer(self, tokens: list[int]) -> str:
        """A generated row's text up to its first stop token (after it, the batch's padding)."""
        end = next((i for i, t in enumerate(tokens) if t in self.stop_ids), len(tokens))
        return self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()

    # --- saving -------------------------------------------------------------------------------

    def _meta(self, step: int, epoch: int, metrics: dict[str, Any], kind: str | None = None) -> dict:
        return {
            "format": 1,
            "kind": kind or self.spec.method,
            "base_model": self.base_ref,
            "step": step,
            "epoch": epoch,
            "metrics": metrics,
            "hyperparameters": dict(self.hp),
            "seed": self.spec.seed,
            "max_seq_len": self.max_seq_len,
        }

    def _epoch_checkpoint(self, epoch: int, metrics: dict[str, Any]) -> None:
        weights = self.parallel.full_weights(self.model)  # (sharded: gathered, every rank takes part)
        if not self.parallel.is_main:
            return
        path = ckpt.save_servable(
            self.model,
            self.tokenizer,
            ckpt.checkpoint_dir(self.out, self.step),
            self._meta(self.step, epoch, metrics),
            state_dict=weights,
        )
        self.last_metrics = metrics
        self.reporter.checkpoint(self.step, epoch, path, metrics)
        kept = ckpt.list_checkpoints(self.out)
        for step, old in kept[: max(0, len(kept) - self.spec.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
            self.reporter.checkpoint_removed(step, old)

    def _save_state(self) -> None:
        full = self.parallel.full_state(self.model, self.optimizer)  # (sharded: every rank takes part)
        if not self.parallel.is_main:
            return
        ckpt.save_state(
            self.out,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            full=full,
            progress={
                "step": self.step,
                "trained_tokens": self.trained_tokens,
                "hyperparameters": dict(self.hp),
                "n_examples": len(self.train_set),
                "method": self.spec.method,
                "seed": self.spec.seed,
                "total_steps": self.total_steps,
                "bf16": self.bf16,
            },
        )
        hook = getattr(self.reporter, "state_saved", None)
        if hook is not None:
            hook(self.out, self.step)

    def _finish(self) -> TrainResult:
        kept = ckpt.list_checkpoints(self.out) if self.parallel.is_main else []
        # the last epoch's checkpoint is the final model (else it is saved: gathered first if sharded)
        reuse = bool(kept and kept[-1][0] == self.step)
        weights = None
        if self.parallel.sharded and not self.parallel.from_main(float(reuse)):
            weights = self.parallel.full_weights(self.model)
        if not self.parallel.is_main:  # rank 0 writes the final model (and returns the result)
            return self._result("succeeded", self.step)
        final = self.out / "final"
        metrics = getattr(self, "last_metrics", {})
        if reuse:
            ckpt.write_atomically(final, lambda tmp: shutil.copytree(kept[-1][1], tmp, dirs_exist_ok=True))
        else:
            ckpt.save_servable(
                self.model,
                self.tokenizer,
                final,
                self._meta(self.step, self.hp.n_epochs, metrics),
                state_dict=weights,
            )
        if self.spec.export_merged and self.spec.method == "lora":
            merged = self._merged(final)
            ckpt.save_servable(
                merged,
                self.tokenizer,
                final / "merged",
                self._meta(self.step, self.hp.n_epochs, metrics, kind="full"),
            )
        # The run is complete: its resumable state (optimizer moments: 2x the trained weights) goes.
        shutil.rmtree(self.out / ckpt.STATE_DIR, ignore_errors=True)
        peak = ""
        if self.device.type == "cuda":  # what a user sizes the next job's GPU by
            peak = f" Peak GPU memory {torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB."
        self.reporter.event(
            f"Training finished: {self.step} steps, {self.trained_tokens} trained tokens.{peak}"
        )
        return self._result("succeeded", self.step, final)

    def _merged(self, adapter_dir: Path):
        """The saved adapter merged into the base as loaded from disk (fp32): the training copy's
        frozen linears may be rounded to bf16, which a full model served on its own must not be."""
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(self.base_ref, dtype=torch.float32)
        return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()

    def _result(self, status: str, steps: int, final: Path | None = None) -> TrainResult:
        return TrainResult(
            status=status,
            trained_tokens=self.trained_tokens,
            steps=steps,
            total_steps=self.total_steps,
            hyperparameters=self.hp,
            final_dir=final,
            metrics_csv=self.out / "step_metrics.csv",
        )


__all__ = ["CHECKPOINT_META", "train"]
