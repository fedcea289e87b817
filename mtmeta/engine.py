"""The one training engine.

It owns everything strategies have in common: the optimiser and learning
rate schedule, gradient clipping, budgets (steps, minutes, tokens),
validation and early stopping, checkpoints that survive a kill, progress
display and the JSONL log. A strategy only says how one step's gradients
are made (see strategies/base.py).
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from tqdm.auto import tqdm

from data_prep.vocab import PAD
from . import distributed as dist_util
from . import hardware as hw
from . import safe_io
from .checkpoint import Bundle, read_checkpoint, save_checkpoint
from .errors import CheckpointError


def _quiet_tensorboard_thread_errors() -> None:
    """TensorBoard writes events in a background thread; a failed write (a full
    disk) there prints a thread traceback and is raised again in the caller on the
    next call, where the engine reports it in one line. Keep only that line."""
    if getattr(threading.excepthook, "_mtmeta_tensorboard", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook._mtmeta_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class EngineSettings(Protocol):
    """What the engine reads of its settings. It is handed the run's own
    config (TrainConfig or AdaptConfig, mtmeta/config.py) as it is: one
    settings object, with the config's defaults, nothing copied by name
    (tests/test_model_engine.py checks both configs provide every field)."""

    lr: float
    warmup_steps: int
    warmup_tokens: int
    label_smoothing: float
    clip_norm: float
    max_steps: int
    max_minutes: float
    max_train_tokens: int
    validate_every: int
    save_every: int
    patience: int
    log_every: int
    seed: int
    snapshot_tokens: int


def sequence_loss(model, batch: dict, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed cross-entropy summed over target tokens (fairseq's)."""
    logits, _ = model(**batch["net_input"])
    # float32 at least (half-precision logits), float64 kept for gradient checks
    lprobs = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
    target = batch["target"]
    loss, nll = label_smoothed_nll_loss(
        lprobs.view(-1, lprobs.size(-1)), target.view(-1), label_smoothing, ignore_index=PAD, reduce=True
    )
    return loss, nll


class Engine:
    def __init__(
        self,
        bundle: Bundle,
        strategy,
        settings: EngineSettings,
        output: str | Path,
        validate: Callable[["Engine"], dict] | None = None,
        run_config: dict | None = None,
        log: Callable[[str], None] = print,
        progress: bool = True,
        hardware: hw.Hardware | None = None,
    ):
        self.bundle = bundle
        self.model = bundle.model
        self.strategy = strategy
        self.settings = settings
        self.output = Path(output)
        self.validate_fn = validate
        self.run_config = run_config or {}
        self.log = log
        self.progress = progress
        # Data parallel under torchrun (mtmeta/distributed.py): every rank has its own
        # seed (dropout); rank 0 alone logs, validates and writes. Single process: rank 0 of 1.
        self.rank, self.world_size = dist_util.get_rank(), dist_util.get_world_size()
        if self.rank != 0:
            self.log, self.progress = (lambda *_: None), False
        torch.manual_seed(dist_util.rank_seed(settings.seed, self.rank))
        # Model, batches and strategy state live on the device; parameters and Adam's
        # state stay fp32 whatever the precision (bf16 is an autocast of the step).
        self.hardware = hardware or hw.cpu_fp32()
        self.model.to(self.hardware.device)
        strategy.to(self.hardware.device)
        self.params = strategy.trainable_parameters(self.model)
        # fused: one kernel over all parameters instead of a dozen small ops per tensor.
        self.optimizer = torch.optim.Adam(self.params, lr=settings.lr, betas=(0.9, 0.98), eps=1e-8, fused=True)
        self.step = 0
        self.tokens = 0  # target tokens of forward/backward work done
        self.elapsed = 0.0  # seconds of training across resumes
        self.best_score = -math.inf
        self.bad_validations = 0
        self.history: list[dict] = []
        self._stop_signal = False

    # --- learning rate ------------------------------------------------------------
    def lr_factor(self, step_tokens: int) -> float:
        """Inverse square-root schedule with linear warmup (Vaswani et al.),
        over updates, or over target tokens when `warmup_tokens` is set: then
        every strategy has the same learning rate at the same point of a shared
        token budget, whatever its tokens per update (a MetaNMT step spends
        support and query batches on one update)."""
        s = self.settings
        if s.warmup_tokens:
            t, w = max(1, self.tokens + step_tokens), s.warmup_tokens
        else:
            t, w = self.step + 1, max(1, s.warmup_steps)
        return min(t / w, math.sqrt(w / t))

    def set_lr(self, step_tokens: int) -> float:
        lr = self.settings.lr * self.lr_factor(step_tokens)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    # --- checkpoints ----------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.output / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output / "best.pt"

    def save(self, path: Path, ranks: list[dict] | None = None) -> None:
        # Distributed: `ranks` holds every rank's sampler and RNG state (see save_last).
        extra = {} if ranks is None else {"world_size": len(ranks), "ranks": ranks}
        save_checkpoint(
            path,
            self.bundle,
            run_config=self.run_config,
            history=self.history,
            train_state={
                "step": self.step,
                "tokens": self.tokens,
                "elapsed": self.elapsed,
                "best_score": self.best_score,
                "bad_validations": self.bad_validations,
                "optimizer": self.optimizer.state_dict(),
                "strategy": self.strategy.state_dict(),
                "torch_rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(self.hardware.device)} if self.hardware.device.type == "cuda" else {}),
                **extra,
            },
        )

    def save_snapshot(self) -> None:
        """Weights only (no optimizer state), each time training passes a
        multiple of `snapshot_tokens`: intermediate models to adapt and score
        (how results depend on the pre-training budget)."""
        if self.rank != 0:
            return
        millions = self.tokens / 1e6
        path = self.output / "snapshots" / f"tokens-{self.tokens:012d}.pt"  # sorts by tokens
        save_checkpoint(path, self.bundle, run_config=self.run_config, history=self.history,
                        snapshot={"step": self.step, "tokens": self.tokens})
        self.log(f"snapshot at {millions:.1f}M target tokens -> {path}")

    def save_last(self) -> None:
        """Write last.pt. Distributed, a collective: every rank's sampler and
        RNG state are gathered into it and rank 0 writes it."""
        if self.world_size == 1:
            self.save(self.last_path)
            return
        ranks = dist_util.all_gather_object({"strategy": self.strategy.state_dict(), "torch_rng": torch.get_rng_state()})
        if self.rank == 0:
            self.save(self.last_path, ranks=ranks)
        dist_util.barrier()

    def resume(self) -> bool:
        if not self.last_path.is_file():
            return False
        state = read_checkpoint(self.last_path)
        if state.get("layout") != self.model.layout() or state.get("model_config") != dataclasses.asdict(self.model.cfg):
            raise CheckpointError(
                f"{self.last_path} was trained with a different model or language set; "
                "use --restart to start over, or another --output"
            )
        self.model.load_state_dict(state["model"])
        ts = state["train_state"]
        self.step, self.tokens, self.elapsed = ts["step"], ts["tokens"], ts["elapsed"]
        self.best_score, self.bad_validations = ts["best_score"], ts["bad_validations"]
        self.optimizer.load_state_dict(ts["optimizer"])
        self.strategy.load_state_dict(ts["strategy"])
        torch.set_rng_state(ts["torch_rng"])
        if self.hardware.device.type == "cuda" and "cuda_rng" in ts:
            torch.cuda.set_rng_state(ts["cuda_rng"], self.hardware.device)
        if self.world_size > 1:  # distributed: this rank's own sampler and RNG state
            self._resume_rank(ts)
        self.history = list(state.get("history", []))
        self.log(f"resumed {self.last_path} at step {self.step} ({self.tokens} tokens, {self.elapsed / 60:.1f} min)")
        return True

    def _resume_rank(self, ts: dict) -> None:
        ranks = ts.get("ranks") or []
        if len(ranks) == self.world_size:
            self.strategy.load_state_dict(ranks[self.rank]["strategy"])
            torch.set_rng_state(ranks[self.rank]["torch_rng"])
            return
        # Saved by a run with another number of workers: rank 0 goes on with the saved
        # stream, the others draw fresh ones (their batches cannot be the uninterrupted run's).
        self.log(f"{self.last_path} was saved by {len(ranks) or 1} worker(s), now {self.world_size}: new sampling streams for ranks 1+")
        if self.rank != 0:
            seed = dist_util.rank_seed(self.settings.seed + self.step, self.rank)
            sampler = getattr(self.strategy, "sampler", None)
            if sampler is not None:
                sampler.rng = np.random.default_rng(seed)
            torch.manual_seed(seed)

    def _check_same_start(self, resumed: bool) -> None:
        """Distributed: every rank must have resumed from the same last.pt."""
        starts = dist_util.all_gather_object((bool(resumed), self.step))
        if len(set(starts)) > 1:
            raise CheckpointError(
                f"workers disagree on where to start (resumed, step by rank: {starts}); "
                f"{self.last_path} must be on a filesystem every worker sees"
            )

    # --- budget ----------------------------------------------------------------
    def budget_left(self) -> bool:
        s = self.settings
        if s.max_steps and self.step >= s.max_steps:
            return False
        if s.max_minutes and self.elapsed >= s.max_minutes * 60:
            return False
        if s.max_train_tokens and self.tokens >= s.max_train_tokens:
            return False
        return True

    def _budget_fraction(self) -> float:
        s = self.settings
        parts = []
        if s.max_steps:
            parts.append(self.step / s.max_steps)
        if s.max_minutes:
            parts.append(self.elapsed / (s.max_minutes * 60))
        if s.max_train_tokens:
            parts.append(self.tokens / s.max_train_tokens)
        return min(1.0, max(parts)) if parts else 0.0

    def _keep_going(self) -> bool:
        if self.world_size > 1:  # distributed: rank 0's clock decides, and a stop asked of any rank stops all
            elapsed, stop = dist_util.all_reduce_max([self.elapsed if self.rank == 0 else 0.0, float(self._stop_signal)])
            self.elapsed, self._stop_signal = elapsed, bool(stop)
        return self.budget_left() and not self._stop_signal

    # --- loop --------------------------------------------------------------------
    def train_one_step(self) -> dict:
        """One update: the strategy's gradients (under the precision's autocast),
        clipping, the learning rate, the optimizer step. What training runs and
        what benchmarks/bench_train.py measures."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.hardware.autocast():
            stats = self.strategy.train_step(self)
        if self.world_size > 1:  # distributed: average gradients; count every rank's tokens
            dist_util.all_reduce_gradients(self.params)
            ntokens, loss = dist_util.all_reduce_sum([stats["ntokens"], stats["loss"]])
            stats = {**stats, "ntokens": int(ntokens), "loss": loss / self.world_size}
        if self.settings.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.clip_norm)
        lr = self.set_lr(stats["ntokens"])
        self.optimizer.step()
        self.step += 1
        self.tokens += stats["ntokens"]
        return {**stats, "lr": lr}

    def validate(self) -> dict:
        if self.world_size > 1:
            # Distributed: rank 0 validates (and writes best.pt) while the others wait for its
            # outcome, so history, best score and early stopping agree on every rank.
            metrics = self._validate() if self.rank == 0 else {}
            self.history, self.best_score, self.bad_validations = dist_util.broadcast_object(
                (self.history, self.best_score, self.bad_validations)
            )
            return metrics
        return self._validate()

    def _validate(self) -> dict:
        if self.validate_fn is None:
            return {}
        self.model.eval()
        with torch.no_grad():
            metrics = self.validate_fn(self)
        self.model.train()
        metrics = {"step": self.step, "tokens": self.tokens, "minutes": round(self.elapsed / 60, 2), **metrics}
        self.history.append(metrics)
        improved = metrics.get("score", -math.inf) > self.best_score
        if improved:
            self.best_score = metrics["score"]
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        self._write_log({"validation": metrics, "improved": improved})
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        self.log(f"validation: {shown}{' (best)' if improved else ''}")
        if improved:
            self.save(self.best_path)
        return metrics

    def _write_log(self, record: dict) -> None:
        if self.rank != 0:  # distributed: rank 0 writes the log
            return
        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / "train_log.jsonl"
        if not getattr(self, "_log_repaired", False):
            # Before this run's first record: drop a torn last line (a kill or a full disk
            # mid-append) and the records of steps this run will write again (those after
            # the step it resumed from; all of them on a fresh start), so the log reads as
            # one uninterrupted run.
            self._log_repaired = True
            note = safe_io.repair_log(path, getattr(self, "_log_start", None))
            if note:
                self.log(note)
        safe_io.append_jsonl(path, record)  # checked: a full disk is one line naming the log
        self._tensorboard(record)

    def _tensorboard(self, record: dict) -> None:
        """The log's numbers as TensorBoard scalars in OUTPUT/tensorboard, against
        target tokens (so strategies with different tokens per update line up by
        budget). A resumed run purges what the interrupted one wrote past its resume
        point. TensorBoard is a view of train_log.jsonl: when it cannot write (a full
        disk), it stops with one line and training goes on."""
        if ("loss" not in record and "validation" not in record) or getattr(self, "_tb_failed", False):
            return
        try:
            self._write_tensorboard(record)
        except OSError as e:
            self._tb_failed = True
            self._tb = None  # its thread has died; close() would raise the same error again
            self.log(f"tensorboard: stopped writing {self.output / 'tensorboard'} ({safe_io.os_reason(e)}); "
                     f"{self.output / 'train_log.jsonl'} has the same numbers")

    def _write_tensorboard(self, record: dict) -> None:
        if getattr(self, "_tb", None) is None:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_tensorboard_thread_errors()
            self._tb = SummaryWriter(log_dir=str(self.output / "tensorboard"), purge_step=self.tokens or None)
        if "loss" in record:
            for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("tok_s", "train/target_tokens_per_s"), ("step", "train/updates")):
                if key in record:
                    self._tb.add_scalar(tag, record[key], self.tokens)
        else:
            for key, value in record["validation"].items():
                if isinstance(value, (int, float)) and key not in ("step", "tokens", "minutes", "score"):
                    self._tb.add_scalar(f"valid/{key}", value, record["validation"]["tokens"])
        self._tb.flush()

    def _close_tensorboard(self) -> None:
        if getattr(self, "_tb", None) is not None:
            try:
                self._tb.close()
            except OSError as e:  # the last events on a full disk: the jsonl log has them
                self.log(f"tensorboard: could not finish {self.output / 'tensorboard'} ({safe_io.os_reason(e)})")
            self._tb = None

    def run(self, resume: bool = True) -> dict:
        """Train. An exclusive lock on the output folder for the whole run:
        a second run into the same folder stops at once, saying who holds it."""
        if self.rank != 0:  # distributed: rank 0 writes, and holds the lock
            return self._run(resume)
        with safe_io.OutputLock(self.output):
            try:
                return self._run(resume)
            finally:
                self._close_tensorboard()

    def _run(self, resume: bool = True) -> dict:
        self.output.mkdir(parents=True, exist_ok=True)
        resumed = resume and self.resume()
        self._log_start = self.step if resumed else -1  # log records after this step are written again
        if self.world_size > 1:
            self._check_same_start(resumed)
        if not resumed:
            self.validate()  # the starting point is a checkpoint too (zero steps)
        if self.world_size > 1:  # distributed: all ranks start from rank 0's parameters
            dist_util.broadcast_parameters(self.model)
            dist_util.broadcast_tensors(self.params)
        s = self.settings
        self.model.train()
        # SIGTERM and Ctrl-C only set a flag: the step in flight finishes (a MetaNMT step
        # restores theta from theta'), then last.pt is written at the step boundary. An
        # exception landing mid-step would save a half-made state. A second Ctrl-C aborts
        # at once without saving (last.pt keeps the previous boundary).
        previous = signal.signal(signal.SIGTERM, self._on_signal)
        previous_int = signal.signal(signal.SIGINT, self._on_signal)
        aborted = False
        # A bar only on a terminal; logs and CI get periodic plain lines instead.
        interactive = self.progress and sys.stderr.isatty()
        bar = tqdm(total=1000, disable=not interactive, desc="train", unit="‰", leave=False)
        bar.update(int(self._budget_fraction() * 1000))
        # Each train_log line's "loss" is the token-weighted mean over the updates since the
        # previous line ("loss_steps" of them): one batch's loss swings 1.7-5 with its language.
        window_tokens, window_start, window_loss, window_steps = 0, time.time(), 0.0, 0
        # A resumed run that had already stopped early stays stopped (same result as never killed).
        stopped_early = bool(s.patience and self.bad_validations >= s.patience)
        if not stopped_early and self.budget_left():
            # Each run segment (first start or resume) records where it ran: thread count and
            # device change floating-point order, so a segment is bit-reproducible on its own setting.
            self._write_log({"segment": {"step": self.step, "tokens": self.tokens, "resumed": bool(resumed),
                                         "hardware": self.hardware.describe(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}})
        try:
            while not stopped_early and self._keep_going():
                t0 = time.time()
                tokens_before = self.tokens
                stats = self.train_one_step()
                lr = stats["lr"]
                self.elapsed += time.time() - t0
                if s.snapshot_tokens and self.tokens // s.snapshot_tokens > tokens_before // s.snapshot_tokens:
                    self.save_snapshot()
                window_tokens += stats["ntokens"]
                window_loss += stats["loss"] * stats["ntokens"]
                window_steps += 1
                bar.update(int(self._budget_fraction() * 1000) - bar.n)
                if self.step % s.log_every == 0:
                    rate = window_tokens / max(1e-9, time.time() - window_start)
                    loss = window_loss / max(1, window_tokens)
                    record = {"step": self.step, "tokens": self.tokens, "loss": loss, "loss_steps": window_steps,
                              "tok_s": round(rate), "lr": lr}
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}")
                    self._write_log(record)
                    if self.progress and not interactive and self.step % (s.log_every * 5) == 0:
                        self.log(
                            f"step {self.step} ({self._budget_fraction():.0%} of budget): loss {loss:.3f}, "
                            f"{rate:.0f} target tok/s, lr {record['lr']:.2e}"
                        )
                    window_tokens, window_start, window_loss, window_steps = 0, time.time(), 0.0, 0
                if s.validate_every and self.step % s.validate_every == 0:
                    t_val = time.time()  # validation time is not training time
                    self.validate()
                    window_start += time.time() - t_val
                    if s.patience and self.bad_validations >= s.patience:
                        self.log(f"early stop: {s.patience} validations without improvement")
                        stopped_early = True
                        break
                if s.save_every and self.step % s.save_every == 0:
                    self.save_last()
        except KeyboardInterrupt:
            aborted = True  # second Ctrl-C: the state in memory may be mid-step; do not save it
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
        if aborted:
            self.log(f"aborted at step {self.step} without saving; {self.last_path} holds the last saved step")
            raise KeyboardInterrupt
        if self._stop_signal:
            self.save_last()
            self.log(f"interrupted at step {self.step}; progress saved to {self.last_path} (run again to resume)")
            raise KeyboardInterrupt
        if not stopped_early and (not self.history or self.history[-1]["step"] != self.step):
            self.validate()
        self.save_last()
        if self.rank == 0 and not self.best_path.exists():
            self.save(self.best_path)
        best = next((h for h in self.history if h.get("score") == self.best_score), {})
        return {"step": self.step, "tokens": self.tokens, "minutes": self.elapsed / 60, "best_score": self.best_score,
                "best_step": best.get("step"), "best_validation": best, "stopped_early": stopped_early}

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._stop_signal:
            raise KeyboardInterrupt  # the second Ctrl-C
        if signum == signal.SIGINT:
            self.log("Ctrl-C: stopping after this step and saving (Ctrl-C again to abort without saving)")
        self._stop_signal = True
