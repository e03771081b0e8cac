"""Post-processing of a segmentation on the input grid: the ROI (which voxels a physical box covers), the
largest connected component of every class, and the normalised entropy (the uncertainty map)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightunetr_core.components import keep_largest_components
from lightunetr_core.data.geometry import Geometry
from lightunetr_core.vocabulary import InputError

__all__ = ["InferenceInputError", "roi_to_index_box", "inside_box", "keep_largest_components", "normalized_entropy"]


class InferenceInputError(InputError):
    """The inputs do not fit the model (channel count, grids, ROI); the message says what to change."""


def normalized_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``-Σ p log p / log K`` over the class axis 0: 0 = certain, 1 = uniform."""
    k = probabilities.shape[0]
    p = np.clip(probabilities, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=0)
    return (entropy / np.log(k)).astype(np.float32) if k > 1 else np.zeros(p.shape[1:], np.float32)


def roi_to_index_box(geometry: Geometry, roi: Sequence[float]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Physical box ``(x0, y0, z0, x1, y1, z1)`` in LPS mm → voxel ``(start, size)`` covering it, clipped
    to the image. Raises :class:`InferenceInputError` when the box misses the image."""
    roi = [float(v) for v in roi]
    if len(roi) != 6:
        raise InferenceInputError(f"ROI needs 6 numbers x0 y0 z0 x1 y1 z1 (LPS mm), got {len(roi)}")
    lo, hi = np.minimum(roi[:3], roi[3:]), np.maximum(roi[:3], roi[3:])
    corners = [[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    indices = np.array([geometry.physical_to_index(c) for c in corners])
    start = np.floor(indices.min(axis=0) + 1e-6).astype(int)
    stop = np.ceil(indices.max(axis=0) - 1e-6).astype(int) + 1
    start = np.maximum(start, 0)
    stop = np.minimum(stop, geometry.size)
    if np.any(stop - start < 1):
        raise InferenceInputError(
            f"the ROI {tuple(roi)} (LPS mm) does not overlap the image ({geometry.describe()}). Give the box "
            "in LPS millimetres (Slicer shows RAS: negate x and y)."
        )
    return tuple(int(s) for s in start), tuple(int(s) for s in (stop - start))


def inside_box(geometry: Geometry, start: Sequence[int], size: Sequence[int], roi: Sequence[float]) -> np.ndarray:
    """Which voxels of the crop ``start``/``size`` have their centre inside the LPS box ``roi`` (slice by slice)."""
    roi = np.asarray(roi, float)
    lo, hi = np.minimum(roi[:3], roi[3:]), np.maximum(roi[:3], roi[3:])
    scaled = geometry.direction_matrix * np.asarray(geometry.spacing)  # columns: step per index axis
    i = np.arange(start[0], start[0] + size[0], dtype=float)
    j = np.arange(start[1], start[1] + size[1], dtype=float)
    ii, jj = np.meshgrid(i, j, indexing="ij")
    plane = np.asarray(geometry.origin) + ii[..., None] * scaled[:, 0] + jj[..., None] * scaled[:, 1]
    mask = np.empty(tuple(size), bool)
    for n, k in enumerate(range(start[2], start[2] + size[2])):
        points = plane + k * scaled[:, 2]
        mask[:, :, n] = np.all((points >= lo - 1e-6) & (points <= hi + 1e-6), axis=-1)
    return mask
