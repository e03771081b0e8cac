"""Spatial Masking Consistency (``Masking`` in the authors' code_cse/dataloaders/masking.py: block 16, ratio 0.5).

* :func:`smc_mask` — per sample a coarse grid ``round(X/16)×round(Y/16)×round(Z/16)`` of U(0, 1),
  keep = value > ratio, upsampled trilinearly (``align_corners=False``) to the patch: a smooth random
  field in [0, 1] that multiplies the strong view.
* :class:`PatchThresholds` — the reference's adaptive confidence thresholds, one per batch slot and
  16³ patch, initialised to 0.8 and updated by EMA 0.99 with the mean confidence of the patch *after*
  the keep-mask was taken with the old value.
* :func:`smc_loss_reference` — cross-entropy against the weak pseudo-label with non-kept voxels
  ignored, averaged over **all** voxels (ignored voxels count as zeros in the mean).
* :func:`smc_loss_paper` — the paper's Dice against the pseudo-label with a fixed τ = 0.75.

Everything is vectorised: no Python loop over patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lightunetr_core.training.losses import mask_dice_loss

SMC_BLOCK = 16
SMC_RATIO = 0.5
THRESHOLD_INIT = 0.8
THRESHOLD_EMA = 0.99
PATCH = 16
PAPER_TAU = 0.75


def smc_grid_shape(spatial: Sequence[int], block: int = SMC_BLOCK) -> tuple[int, int, int]:
    """Coarse grid of the masking field (Python ``round`` as in the reference; at least 1)."""
    return tuple(max(1, round(int(s) / block)) for s in spatial)


def smc_mask(
    batch: int,
    spatial: Sequence[int],
    generator: torch.Generator,
    block: int = SMC_BLOCK,
    ratio: float = SMC_RATIO,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Masking field (batch, 1, X, Y, Z) in [0, 1]."""
    grid = smc_grid_shape(spatial, block)
    coarse = (torch.rand((batch, 1) + grid, generator=generator) > ratio).float()
    return F.interpolate(coarse.to(device), size=tuple(int(s) for s in spatial), mode="trilinear", align_corners=False)


def patch_grid(spatial: Sequence[int], patch: int = PATCH) -> tuple[int, int, int]:
    spatial = tuple(int(s) for s in spatial)
    if any(s % patch for s in spatial):
        raise ValueError(f"patch-wise thresholds need every axis to be a multiple of {patch}, got {spatial}")
    return tuple(s // patch for s in spatial)


class PatchThresholds:
    """Adaptive per-patch confidence thresholds τ[b, i, j, k] (indexed by batch slot, not by case).

    Args:
        slots: unlabelled batch size.
        spatial: patch size (X, Y, Z), multiples of 16.
        init: initial threshold (0.8 in the reference; its ``--conf_thresh``).
        momentum: EMA factor (0.99).
    """

    def __init__(self, slots: int, spatial: Sequence[int], init: float = THRESHOLD_INIT,
                 momentum: float = THRESHOLD_EMA, patch: int = PATCH, device="cpu") -> None:
        self.patch = patch
        self.momentum = momentum
        self.tau = torch.full((slots,) + patch_grid(spatial, patch), float(init), dtype=torch.float32, device=device)

    def _patch_view(self, conf: torch.Tensor) -> torch.Tensor:
        b, x, y, z = conf.shape
        p = self.patch
        return conf.reshape(b, x // p, p, y // p, p, z // p, p)

    def update(self, conf: torch.Tensor) -> torch.Tensor:
        """Keep mask ``conf ≥ τ(old)`` (voxel-wise, float 0/1, shape of ``conf`` (B, X, Y, Z)),
        then ``τ ← m·τ + (1−m)·mean(conf in patch)``."""
        conf = conf.detach().float()
        if conf.shape[0] != self.tau.shape[0] or tuple(s // self.patch for s in conf.shape[1:]) != tuple(self.tau.shape[1:]):
            raise ValueError(f"confidence of shape {tuple(conf.shape)} does not fit thresholds {tuple(self.tau.shape)}")
        tau = self.tau.to(conf.device)
        view = self._patch_view(conf)
        keep = (view >= tau[:, :, None, :, None, :, None]).reshape(conf.shape).float()
        mean = view.mean(dim=(2, 4, 6))
        self.tau = self.momentum * tau + (1.0 - self.momentum) * mean
        return keep

    def state_dict(self) -> dict:
        return {"tau": self.tau.detach().cpu().clone(), "momentum": self.momentum, "patch": self.patch}

    def load_state_dict(self, state: dict) -> None:
        tau = state["tau"]
        if tuple(tau.shape) != tuple(self.tau.shape):
            raise ValueError(f"checkpoint thresholds have shape {tuple(tau.shape)}, expected {tuple(self.tau.shape)} "
                             "(batch size or patch size changed since the checkpoint)")
        self.tau = tau.to(self.tau.device, torch.float32).clone()
        self.momentum = float(state.get("momentum", self.momentum))


def smc_loss_reference(strong_logits: torch.Tensor, pseudo: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """CE(strong logits, pseudo-label) · keep, mean over all voxels."""
    ce = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (ce * keep).mean()


def smc_loss_paper(strong_logits: torch.Tensor, pseudo: torch.Tensor, conf: torch.Tensor, tau: float = PAPER_TAU) -> torch.Tensor:
    """Dice of the strong prediction against the pseudo-label on voxels with confidence ≥ τ."""
    return mask_dice_loss(strong_logits, pseudo, (conf.detach() >= tau).float())
