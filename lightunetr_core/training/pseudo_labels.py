"""Pseudo-labels for Attention-Guided Replacement (the pseudo-labels of the authors' code_cse/train_cse_withval.py; the
multi-class form is ours: the authors' code handles two classes).

* :func:`binary_pseudo_label` — the reference: ``p(class 1) ≥ 0.5`` then the largest connected
  component (26-connectivity) per sample; an empty foreground stays empty.
* :func:`multiclass_pseudo_label` — any K: arg-max, then for every foreground class keep only its
  largest connected component (26-connectivity); removed voxels become background.

Both label the whole batch (and every class) with a single ``scipy.ndimage.label`` call: the samples
and classes are stacked along extra axes that the structuring element does not connect.
"""

from __future__ import annotations

import numpy as np
import torch

from lightunetr_core.components import largest_components


def binary_pseudo_label(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``probs`` (B, K≥2, X, Y, Z) → int64 labels (B, X, Y, Z) in {0, 1}."""
    fg = (probs[:, 1] >= threshold).detach().cpu().numpy()
    kept = largest_components(fg)
    return torch.from_numpy(kept.astype(np.int64)).to(probs.device)


def multiclass_pseudo_label(probs: torch.Tensor) -> torch.Tensor:
    """``probs`` (B, K, X, Y, Z) → int64 labels (B, X, Y, Z): arg-max with per-class LCC."""
    b, k = probs.shape[:2]
    arg = probs.detach().argmax(1).cpu().numpy()
    if k < 2:
        return torch.from_numpy(arg.astype(np.int64)).to(probs.device)
    classes = np.arange(1, k).reshape(1, k - 1, 1, 1, 1)
    masks = arg[:, None] == classes  # (B, K−1, X, Y, Z)
    kept = largest_components(masks.reshape((b * (k - 1),) + arg.shape[1:])).reshape(masks.shape)
    out = (kept * classes).sum(1)  # classes are disjoint
    return torch.from_numpy(out.astype(np.int64)).to(probs.device)


def agr_pseudo_label(probs: torch.Tensor, multiclass: bool | None = None) -> torch.Tensor:
    """Reference binary rule for K = 2 (unless ``multiclass=True``), arg-max + per-class LCC otherwise."""
    if multiclass is None:
        multiclass = probs.shape[1] > 2
    return multiclass_pseudo_label(probs) if multiclass else binary_pseudo_label(probs)
