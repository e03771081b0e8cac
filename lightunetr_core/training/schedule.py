"""Optimiser and learning-rate schedule (the authors' code_cse/train_cse_withval.py: SGD, lr 0.01, momentum 0.9,
weight decay 1e-4).

SGD, lr 0.01, momentum 0.9, weight decay 1e−4. The schedule is applied **after** each step: after
iteration t (1-based) the lr of the next step is ``base·t/warmup`` while t < warmup, then
``base·(1 + cos(π·(t − warmup)/(total − warmup)))/2``. The first step therefore runs at the full
base lr, as in the reference.
"""

from __future__ import annotations

import math

import torch

BASE_LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
WARMUP = 500


def lr_after(t: int, base_lr: float = BASE_LR, total: int = 15000, warmup: int = WARMUP) -> float:
    """Learning rate for the step that follows iteration ``t`` (1-based)."""
    if t < warmup:
        return base_lr * t / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (t - warmup) / span)
    return base_lr * (1.0 + math.cos(math.pi * progress)) / 2.0


class WarmupCosine:
    """Sets the optimiser's lr after each iteration; its state is the iteration count."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float = BASE_LR, total: int = 15000,
                 warmup: int = WARMUP) -> None:
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.total = int(total)
        self.warmup = int(warmup)
        self.iteration = 0
        self._set(self.base_lr)

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self) -> float:
        """Call after ``optimizer.step()`` of iteration ``self.iteration + 1``."""
        self.iteration += 1
        lr = lr_after(self.iteration, self.base_lr, self.total, self.warmup)
        self._set(lr)
        return lr

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "base_lr": self.base_lr, "total": self.total, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.base_lr = float(state["base_lr"])
        self.total = int(state["total"])
        self.warmup = int(state["warmup"])
        self.iteration = int(state["iteration"])
        self._set(lr_after(self.iteration, self.base_lr, self.total, self.warmup) if self.iteration else self.base_lr)


def build_optimizer(params, optimizer: str = "sgd", lr: float = BASE_LR, weight_decay: float | None = None):
    """``"sgd"`` (reference: momentum 0.9, wd 1e−4) or ``"adamw"`` (betas 0.9/0.95, wd 0.005, the
    fully-supervised recipe of the authors)."""
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM,
                               weight_decay=WEIGHT_DECAY if weight_decay is None else weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.005 if weight_decay is None else weight_decay)
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd' or 'adamw'")
