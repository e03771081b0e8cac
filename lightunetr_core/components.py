"""Connected components of masks and label maps (26-connectivity): the reference's largest-component
post-processing, used by CSE's pseudo-labels and by ``segment --largest-component``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["component_sizes", "largest_components", "keep_largest_components"]


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Voxel counts of the 26-connected components of one 3-D ``mask``, largest first (empty: no entries)."""
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3, 3), dtype=bool))
    return np.sort(np.bincount(labels.ravel(), minlength=count + 1)[1:])[::-1]


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


def keep_largest_components(labels: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """For each foreground class keep only its largest 26-connected component (others → background 0)."""
    values = [int(v) for v in (classes if classes is not None else np.unique(labels)) if int(v) != 0]
    if not values:
        return labels.copy()
    masks = np.stack([labels == v for v in values])
    kept = largest_components(masks)  # one ndimage.label call for every class
    out = labels.copy()
    out[masks.any(axis=0) & ~kept.any(axis=0)] = 0
    return out
