"""The training loop: sampling, recipe step, schedule, validation, checkpoints, events, cancel,
resume, stop-after and DDP.

Files in the run folder:

* ``checkpoint.pt`` — the resumable state (see :mod:`~lightunetr_core.training.checkpoint`), written
  at every validation, at ``stop_after``, on cancel and at the end;
* ``best_model.pt`` — model state dict of the best validation Dice so far (weights only);
* the model bundle is written by the CLI from the result.

Determinism: with the same seed, device and thread settings, a run stopped at iteration k and resumed
produces the same weights as an uninterrupted run (CPU), because the checkpoint carries every RNG
state (global torch for dropout, the recipe generator, the sampler generator), the SGD momentum, the
schedule and the SMC thresholds. A cancel request is honoured before each forward pass: a half-done
iteration is rolled back (BatchNorm buffers, thresholds and RNG states are restored) and the
checkpoint holds the last completed iteration.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lightunetr_core.devices import is_out_of_memory
from lightunetr_core.metrics import dice_per_class
from lightunetr_core.jobs import CancelToken, JobCancelled
from lightunetr_core.training import distributed as ddp
from lightunetr_core.training.checkpoint import (
    atomic_torch_save, capture_rng, load_checkpoint, load_sampler_state, restore_rng, sampler_state,
    save_checkpoint,
)
from lightunetr_core.training import runlog
from lightunetr_core.training.recipes import RecipeConfig, make_thresholds, training_step
from lightunetr_core.training.schedule import WarmupCosine, build_optimizer
from lightunetr_core.vocabulary import InputError

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best_model.pt"


class BadTrainingInput(InputError):
    """The configuration or data cannot be trained on; the message says what to change."""


class Sampler(Protocol):
    def sample_labeled(self, n: int) -> dict: ...
    def sample_unlabeled(self, n: int) -> dict: ...


@dataclass
class TrainingData:
    """What the trainer needs from the dataset side.

    ``make_sampler(generator)`` returns an object with ``sample_labeled(n)`` / ``sample_unlabeled(n)``
    (see ``lightunetr_core.data.sampling.PatchSampler``); ``validation`` is a sequence of
    ``(image C×X×Y×Z float32, label X×Y×Z uint8)``.
    """

    make_sampler: Callable[[torch.Generator], Sampler]
    validation: Sequence[tuple[np.ndarray, np.ndarray]]
    in_channels: int
    num_classes: int
    labeled_count: int
    unlabeled_count: int


@dataclass
class TrainConfig:
    """The trainer's settings (:class:`~lightunetr_core.training.request.TrainingRequest` is the user's
    request; :func:`~lightunetr_core.training.run.run_training` turns one into the other). ``in_channels`` and
    ``num_classes`` come from the dataset; the network is ``models.model_args(architecture, in_channels,
    num_classes, patch_size)``, so the patch size is given once."""

    run_dir: Path
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    architecture: str = "lightunetr"
    in_channels: int = 1
    num_classes: int = 2
    patch_size: tuple[int, int, int] = (112, 112, 80)
    iterations: int = 15000
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    lr: float = 0.01
    optimizer: str = "sgd"
    warmup: int = 500
    val_every: int = 200
    seed: int = 1337
    device: str = "cpu"
    stop_after: int | None = None
    resume: bool = False
    progress_interval_s: float = 0.5
    sw_overlap: float | tuple[float, float, float] = 0.5

    @property
    def model_args(self) -> dict:
        from lightunetr_core.models import model_args

        return model_args(self.architecture, self.in_channels, self.num_classes, self.patch_size)

    def describe(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "recipe"}
        d["run_dir"] = str(self.run_dir)
        d["patch_size"] = list(self.patch_size)
        d["sw_overlap"] = list(self.sw_overlap) if isinstance(self.sw_overlap, tuple) else self.sw_overlap
        d["recipe"] = self.recipe.to_dict()
        return d


def _resume_signature(config: TrainConfig, world_size: int = 1) -> dict:
    return {"architecture": config.architecture, "patch_size": list(config.patch_size), "world_size": world_size,
            "batch_labeled": config.batch_labeled, "batch_unlabeled": config.batch_unlabeled,
            "recipe": config.recipe.recipe, "lean": config.recipe.lean, "optimizer": config.optimizer,
            "iterations": config.iterations}


class Trainer:
    """Runs a :class:`TrainConfig` on :class:`TrainingData`. ``initial_model``: start from this network (e.g.
    a loaded bundle's) instead of a freshly initialised one; it must have ``config.model_args``."""

    def __init__(self, config: TrainConfig, data: TrainingData, events=None, cancel: CancelToken | None = None,
                 dist_info: ddp.DistInfo | None = None, initial_model: torch.nn.Module | None = None) -> None:
        self.config = config
        self.data = data
        self.initial_model = initial_model
        self.events = events
        self.cancel = cancel or CancelToken()
        self.dist = dist_info or ddp.DistInfo()
        self.device = ddp.device_for(config.device, self.dist)
        self.run_dir = Path(config.run_dir)
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.best_path = self.run_dir / BEST_NAME

    # -- events (rank 0 only) ------------------------------------------------------------------------
    def emit(self, event: str, **fields) -> None:
        if self.events is not None and self.dist.is_main:
            self.events.emit(event, **fields)

    # -- set-up ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        from lightunetr_core.models import build_model

        c = self.config
        torch.manual_seed(c.seed)  # identical initial weights on every rank
        if torch.cuda.is_available():
            # As the authors' train_cse_withval.py: reproducible cuDNN kernels on the GPU.
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        model = self.initial_model if self.initial_model is not None else build_model(c.architecture, **c.model_args)
        self.model_plain = model.to(self.device)
        self.model = ddp.wrap_model(self.model_plain, self.dist)
        self.optimizer = build_optimizer(self.model_plain.parameters(), c.optimizer, c.lr)
        self.scheduler = WarmupCosine(self.optimizer, c.lr, c.iterations, c.warmup)
        self.thresholds = make_thresholds(c.recipe, c.batch_unlabeled, c.patch_size, self.device)
        rank_offset = 1000 * self.dist.rank
        self.recipe_gen = torch.Generator().manual_seed(c.seed + 1 + rank_offset)
        self.sampler_gen = torch.Generator().manual_seed(c.seed + 2 + rank_offset)
        # Ranks train on different batches but the dropout stream may differ too.
        torch.manual_seed(c.seed + 3 + rank_offset)
        self.sampler = self.data.make_sampler(self.sampler_gen)
        self.generators = {"recipe": self.recipe_gen, "sampler": self.sampler_gen}
        self.iteration = 0
        self.best = {"dice": None, "iteration": None}

    def _resume(self) -> None:
        state = load_checkpoint(self.checkpoint_path)
        saved = state.get("config", {}).get("signature", {})
        mine = _resume_signature(self.config, self.dist.world_size)
        diff = {k: (saved.get(k), v) for k, v in mine.items() if k in saved and saved[k] != v}
        if diff:
            raise BadTrainingInput(
                "cannot resume: the run in "
                f"{self.run_dir} was started with different settings "
                + ", ".join(f"{k}={a} (now {b})" for k, (a, b) in diff.items())
                + "; resume with the original settings or start a new run folder")
        self.model_plain.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        own = state
        if self.dist.enabled and state.get("ranks"):
            own = state["ranks"][self.dist.rank]
        if self.thresholds is not None and own.get("thresholds") is not None:
            self.thresholds.load_state_dict(own["thresholds"])
        restore_rng(own["rng"], self.generators)
        load_sampler_state(self.sampler, own.get("sampler") or {})
        self.iteration = int(state["iteration"])
        best = state.get("best") or {}
        self.best = {"dice": best.get("dice"), "iteration": best.get("iteration")}

    # -- checkpointing ---------------------------------------------------------------------------------
    def _snapshot(self) -> dict:
        return {
            "rng": capture_rng(self.generators),
            "buffers": {k: v.detach().clone() for k, v in self.model_plain.named_buffers()},
            "thresholds": self.thresholds.state_dict() if self.thresholds is not None else None,
            "sampler": sampler_state(self.sampler),
        }

    def _rollback(self, snap: dict) -> None:
        with torch.no_grad():
            for k, v in self.model_plain.named_buffers():
                v.copy_(snap["buffers"][k])
        if self.thresholds is not None:
            self.thresholds.load_state_dict(snap["thresholds"])
        restore_rng(snap["rng"], self.generators)
        load_sampler_state(self.sampler, snap["sampler"])

    def save(self, rng: dict | None = None, sampler: dict | None = None) -> Path | None:
        """Write checkpoint.pt (rank 0). Under DDP every rank must call it (the per-rank states are gathered)."""
        ranks = None
        if self.dist.enabled:
            ranks = ddp.gather_objects({
                "rng": capture_rng(self.generators), "sampler": sampler_state(self.sampler),
                "thresholds": self.thresholds.state_dict() if self.thresholds is not None else None,
            }, self.dist)
        if not self.dist.is_main:
            return None
        path = save_checkpoint(
            self.checkpoint_path, model=self.model_plain, optimizer=self.optimizer, scheduler=self.scheduler,
            thresholds=self.thresholds, rng=rng if rng is not None else capture_rng(self.generators),
            iteration=self.iteration,
            config={"signature": _resume_signature(self.config, self.dist.world_size), "seed": self.config.seed},
            best={k: v for k, v in self.best.items() if v is not None},
            sampler=sampler if sampler is not None else sampler_state(self.sampler),
            ranks=ranks,
        )
        self.emit("checkpoint", path=str(path), iteration=self.iteration, kind="resume")
        return path

    # -- validation ------------------------------------------------------------------------------------
    def validate(self) -> dict | None:
        if not self.data.validation:
            return None
        from monai.inferers import sliding_window_inference

        model = self.model_plain
        model.eval()
        per_case = []
        try:
            with torch.no_grad():
                for image, label in self.data.validation:
                    if not self.dist.enabled:
                        self.cancel.raise_if_cancelled()
                    x = torch.from_numpy(np.array(image, dtype=np.float32))[None].to(self.device)
                    ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.config.recipe.bf16
                           else _null())
                    with ctx:
                        logits = sliding_window_inference(x, tuple(self.config.patch_size), 1, model,
                                                          overlap=self.config.sw_overlap, mode="constant")
                    pred = logits.float().argmax(1)[0].cpu().numpy()
                    per_case.append(dice_per_class(pred, np.asarray(label), self.data.num_classes))
        finally:
            model.train()
        per_class = {}
        for c in range(1, self.data.num_classes):
            values = [d[c] for d in per_case if not math.isnan(d[c])]
            per_class[str(c)] = float(np.mean(values)) if values else float("nan")
        finite = [v for v in per_class.values() if not math.isnan(v)]
        dice = float(np.mean(finite)) if finite else float("nan")
        return {"dice": dice, "per_class": per_class, "cases": len(per_case)}

    def _after_validation(self, result: dict) -> None:
        dice = result["dice"]
        improved = not math.isnan(dice) and (self.best["dice"] is None or dice > self.best["dice"])
        if improved:
            self.best = {"dice": dice, "iteration": self.iteration}
            atomic_torch_save({k: v.detach().cpu() for k, v in self.model_plain.state_dict().items()}, self.best_path)
        self.emit("validation", iteration=self.iteration, dice=dice, per_class=result["per_class"],
                  best=improved, best_dice=self.best["dice"], cases=result["cases"])
        if improved:
            self.emit("checkpoint", path=str(self.best_path), iteration=self.iteration, kind="best")
        self._write_report()

    def _write_report(self) -> None:
        """Refresh the training log CSVs and progress.png from events.jsonl (runlog.py). A failure (a full
        disk, a broken matplotlib) is a warning: the training itself goes on."""
        if not (self.dist.is_main and self.events is not None and getattr(self.events, "keeping", False)):
            return
        try:
            runlog.write_run_report(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - reporting must not stop training
            self.emit("log", level="warning", message=f"could not update the training log in {self.run_dir}: {exc}")

    # -- loop --------------------------------------------------------------------------------------------
    def _check_cancel(self) -> None:
        # Mid-step cancellation only without DDP (ranks must agree, which happens between iterations).
        # Throttled: the cancel file is stat'ed at most every 50 ms.
        if self.dist.enabled:
            return
        now = time.monotonic()
        if now - self._last_cancel_check < 0.05:
            return
        self._last_cancel_check = now
        self.cancel.raise_if_cancelled()

    def _install_backward_checks(self) -> None:
        """Poll for cancellation during backward too (a gradient hook on every parameter; the exception
        aborts the backward pass, the iteration is then rolled back)."""
        self._last_cancel_check = 0.0
        if self.dist.enabled:
            return

        def hook(grad):
            self._check_cancel()
            return grad

        for param in self.model_plain.parameters():
            if param.requires_grad:
                param.register_hook(hook)

    def _batch(self) -> tuple[dict, dict | None]:
        def to_device(d: dict) -> dict:
            return {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in d.items()}

        labeled = to_device(self.sampler.sample_labeled(self.config.batch_labeled))
        unlabeled = None
        if self.config.recipe.needs_unlabeled:
            unlabeled = to_device(self.sampler.sample_unlabeled(self.config.batch_unlabeled))
        return labeled, unlabeled

    def run(self) -> dict:
        c = self.config
        self._build()
        if c.resume:
            self._resume()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.events is not None and hasattr(self.events, "keep_in") and not self.events.keeping:
                self.events.keep_in(self.run_dir / runlog.EVENTS_FILE)  # appended across resumes
        self.emit("started", total=c.iterations, config={**c.describe(), "init_weights": self.initial_model is not None},
                  start_iteration=self.iteration,
                  world_size=self.dist.world_size, device=str(self.device))
        stop_at = c.iterations if c.stop_after is None else min(c.iterations, max(c.stop_after, 0))
        t0 = time.monotonic()
        done_here = 0
        last_emit = 0.0
        self.model.train()
        self._install_backward_checks()
        status = "finished"
        while self.iteration < stop_at:
            if ddp.any_rank(self.cancel.cancelled(), self.dist, self.device):
                self._cancelled()
            snap = self._snapshot()
            try:
                labeled, unlabeled = self._batch()
                self.optimizer.zero_grad(set_to_none=True)
                result = training_step(self.model, labeled, unlabeled, c.recipe, self.thresholds,
                                       self.recipe_gen, check=self._check_cancel)
                if not torch.isfinite(result.loss):
                    raise FloatingPointError(
                        f"loss became {float(result.loss)} at iteration {self.iteration + 1}; lower --lr or disable --bf16")
                result.loss.backward()
                if not self.dist.enabled:
                    self.cancel.raise_if_cancelled()
            except JobCancelled:
                self.optimizer.zero_grad(set_to_none=True)
                self._rollback(snap)
                self._cancelled()
            except Exception as exc:  # noqa: BLE001 - only running out of memory is turned into advice
                if not is_out_of_memory(exc):
                    raise
                result = None  # the failed step's tensors hold the memory
                self.optimizer.zero_grad(set_to_none=True)
                self._rollback(snap)
                raise self._out_of_memory(exc) from None
            self.optimizer.step()
            self.iteration += 1
            done_here += 1
            lr = self.scheduler.step()
            if self.dist.is_main:
                self.emit("iteration", record_only=True, iteration=self.iteration,
                          loss={k: float(v) for k, v in result.terms.items()}, lr=lr)
            now = time.monotonic()
            if self.dist.is_main and (now - last_emit >= c.progress_interval_s or self.iteration == stop_at or done_here == 1):
                last_emit = now
                rate = done_here / max(now - t0, 1e-9)
                self.emit("progress", **_progress_fields(self.iteration, c.iterations, rate,
                                          {k: float(v) for k, v in result.terms.items()}, lr))
            if c.val_every and self.iteration % c.val_every == 0 and self.iteration < c.iterations:
                self._validate_and_save()
        if self.iteration >= c.iterations:
            self._validate_and_save(final=True)
        else:
            status = "stopped"
            self.save()
        self._write_report()
        in_sync = ddp.parameters_in_sync(self.model, self.dist)
        if not in_sync:
            raise RuntimeError("DDP ranks ended with different parameters")
        summary = {"status": status, "iteration": self.iteration, "iterations": c.iterations,
                   "best_dice": self.best["dice"], "best_iteration": self.best["iteration"],
                   "train_elapsed_s": time.monotonic() - t0, "world_size": self.dist.world_size,
                   "ranks_in_sync": in_sync}
        return summary

    def _out_of_memory(self, exc: BaseException) -> "TrainingOutOfMemory":
        """The message for a training step that does not fit: what the step had allocated when it failed
        plus what it then asked for (PyTorch's "Tried to allocate ..."), against what the device has. A run
        that had made progress keeps a checkpoint at its last full iteration."""
        c = self.config
        gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
        if self.device.type == "cuda":  # what the step had allocated (peak) and what the GPU has
            held = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(self.device)
            room = f"; {self.device} has {gib(total)} in all, {gib(free)} free now"
        else:  # this process's peak resident memory; its address-space limit or the machine's free memory
            import resource

            held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
            limit = resource.getrlimit(resource.RLIMIT_AS)[0]
            room = (f"; this process may map {gib(limit)} in all (ulimit -v)" if limit != resource.RLIM_INFINITY else
                    f"; the machine has {gib(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES'))} free"
                    if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names else "")
        asked = 0.0
        match = re.search(r"tried to allocate ([\d.]+) ?(bytes|[KMGT]i?B)", str(exc), re.IGNORECASE)
        if match:
            unit = match.group(2)[0].upper()
            asked = float(match.group(1)) * (1 if unit == "B" else 1024 ** ("KMGT".index(unit) + 1))
        need = (f"it failed holding {gib(held)} and asking for {gib(asked)} more, so it needs more than "
                f"{gib(held + asked)}{room}")
        checkpoint = self.save() if self.iteration > 0 else None
        batch = f"{c.batch_labeled} labelled" + (f" + {c.batch_unlabeled} unlabelled" if c.recipe.needs_unlabeled else "")
        return TrainingOutOfMemory(
            f"a training step at patch {tuple(c.patch_size)} with batch {batch}{' (lean)' if c.recipe.lean else ''}"
            f"{' (bf16)' if c.recipe.bf16 else ''} does not fit "
            f"in the memory of {self.device}: {need}. Lower --patch-size or the batch sizes, use --lean (3 passes "
            "instead of 4), --bf16, or a device with more memory"
            + (f"; the run stopped at iteration {self.iteration} with a checkpoint ({checkpoint}): --resume continues "
               "it with the same settings" if checkpoint else ""))

    def _validate_and_save(self, final: bool = False) -> None:
        if self.dist.is_main:
            try:
                result = self.validate()
            except JobCancelled:
                self._cancelled()
            if result is not None:
                self._after_validation(result)
        self.save()
        ddp.barrier(self.dist)

    def _cancelled(self):
        path = self.save()
        self._write_report()
        raise TrainingCancelled(self.cancel.reason or "cancelled", path, self.iteration)

    # -- outputs -----------------------------------------------------------------------------------------
    def final_state(self, use_best: bool = True) -> tuple[dict, str]:
        """Weights for the bundle: the best-validation weights when there are any, else the last."""
        if use_best and self.best["dice"] is not None and self.best_path.is_file():
            return torch.load(self.best_path, map_location="cpu", weights_only=True), "best_validation"
        return {k: v.detach().cpu() for k, v in self.model_plain.state_dict().items()}, "last_iteration"


class TrainingOutOfMemory(BadTrainingInput):
    """A training step does not fit in the device's memory; the message names what it needs."""


class TrainingCancelled(JobCancelled):
    def __init__(self, message: str, checkpoint: Path | None, iteration: int) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.iteration = iteration


def _progress_fields(iteration: int, total: int, rate: float, loss: dict, lr: float) -> dict:
    return {"done": iteration, "total": total, "fraction": iteration / total if total else None,
            "rate": rate, "eta_s": (total - iteration) / rate if rate > 0 else None,
            "iteration": iteration, "loss": loss, "lr": lr, "it_per_s": rate, "stage": "train"}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


__all__ = ["Trainer", "TrainConfig", "TrainingData", "TrainingCancelled", "BadTrainingInput", "TrainingOutOfMemory",
           "dice_per_class",
           "CHECKPOINT_NAME", "BEST_NAME"]
