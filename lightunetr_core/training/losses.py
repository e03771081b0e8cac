"""Loss functions of the CSE recipes (code_cse/utils/losses.py and ``mix_loss`` in code_cse/utils/BCP_utils.py), for any number of classes K.

* :func:`dice_sq_loss` — supervised Dice with squared denominator, per class over the whole batch:
  ``1 − (2Σp·y + 1e−10)/(Σp² + Σy² + 1e−10)``, averaged over classes (background included).
* :func:`mask_dice_loss` — softmax, per sample and per class
  ``(2Σ m·p·y + 1e−5)/(Σ m·(p + y) + 1e−5)``; loss = 1 − mean over samples and classes.
* :func:`masked_ce` — per-voxel CE summed inside the mask divided by the mask's voxel count (+1e−16).
* :func:`mix_loss` — AGR loss ``½·[(D_in + 0.5·D_out) + (CE_in + 0.5·CE_out)]``; "in" = labelled
  ground truth inside the box, "out" = pseudo-label outside it.
* :func:`supervised_loss` — ``CE + DiceSq`` on the labelled batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DICE_SQ_SMOOTH = 1e-10
MASK_DICE_SMOOTH = 1e-5
MASK_CE_EPS = 1e-16


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, X, Y, Z) int → (B, K, X, Y, Z) float."""
    target = target.long().unsqueeze(1)
    out = torch.zeros((target.shape[0], num_classes) + tuple(target.shape[2:]), dtype=torch.float32, device=target.device)
    return out.scatter_(1, target, 1.0)


def dice_sq_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``probs`` softmax probabilities (B, K, ...), ``target`` integer labels (B, ...)."""
    probs = probs.float()
    y = one_hot(target, probs.shape[1])
    dims = (0,) + tuple(range(2, probs.ndim))
    inter = (probs * y).sum(dims)
    denom = (probs * probs).sum(dims) + (y * y).sum(dims)
    return (1.0 - (2.0 * inter + DICE_SQ_SMOOTH) / (denom + DICE_SQ_SMOOTH)).mean()


def mask_dice_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``logits`` (B, K, ...), ``target`` (B, ...), ``mask`` (B, ...) or (B, 1, ...) weights."""
    probs = torch.softmax(logits.float(), dim=1)
    y = one_hot(target, probs.shape[1])
    m = mask.float()
    if m.ndim == probs.ndim - 1:
        m = m.unsqueeze(1)
    dims = tuple(range(2, probs.ndim))
    inter = (m * probs * y).sum(dims)
    denom = (m * (probs + y)).sum(dims)
    return 1.0 - ((2.0 * inter + MASK_DICE_SMOOTH) / (denom + MASK_DICE_SMOOTH)).mean()


def masked_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    if m.ndim == logits.ndim:
        m = m.squeeze(1)
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return (ce * m).sum() / (m.sum() + MASK_CE_EPS)


def mix_loss(
    logits: torch.Tensor,
    target_in: torch.Tensor,
    target_out: torch.Tensor,
    box_mask: torch.Tensor,
    weight_in: float = 1.0,
    weight_out: float = 0.5,
) -> torch.Tensor:
    """AGR loss on the mixed image: ``box_mask`` is 1 inside the box (labelled content)."""
    inside = box_mask.float()
    outside = 1.0 - inside
    dice = weight_in * mask_dice_loss(logits, target_in, inside) + weight_out * mask_dice_loss(logits, target_out, outside)
    ce = weight_in * masked_ce(logits, target_in, inside) + weight_out * masked_ce(logits, target_out, outside)
    return 0.5 * (dice + ce)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE mean, DiceSq) of the labelled batch."""
    logits = logits.float()
    return F.cross_entropy(logits, target.long()), dice_sq_loss(torch.softmax(logits, dim=1), target)
