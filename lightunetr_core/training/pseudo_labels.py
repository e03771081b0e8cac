"""Pseudo-labels for Attention-Guided Replacement (spec §3.4, §6.1 items 4 and 7).

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
from scipy import ndimage


def largest_components(masks: np.ndarray) -> np.ndarray:
    """``masks`` bool (G, X, Y, Z) — G independent volumes; returns the largest 26-connected component
    of each (ties: the first in raster order); empty volumes stay empty."""
    masks = np.ascontiguousarray(masks, dtype=bool)
    groups = masks.shape[0]
    structure = np.zeros((3, 3, 3, 3), dtype=bool)
    structure[1] = True  # 26-connectivity inside a volume, nothing across volumes
    labels, count = ndimage.label(masks, structure=structure)
    if count == 0:
        return masks.copy()
    flat = labels.reshape(groups, -1)
    sizes = np.bincount(flat.ravel(), minlength=count + 1)
    # Group of every label: volume index of its voxels (labels never span volumes).
    group_of = np.zeros(count + 1, dtype=np.int64)
    vol_index = np.broadcast_to(np.arange(groups)[:, None], flat.shape)
    group_of[flat[flat > 0]] = vol_index[flat > 0]
    ids = np.arange(1, count + 1)
    # Sort by group, then by size descending, then by label: first entry per group wins.
    order = np.lexsort((ids, -sizes[1:], group_of[1:]))
    sorted_groups = group_of[1:][order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    keep_label = np.zeros(count + 1, dtype=bool)
    keep_label[ids[order][first]] = True
    return keep_label[labels]


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
