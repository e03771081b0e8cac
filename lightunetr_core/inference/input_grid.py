"""Label map on the input grid from model-space probabilities, resampling only where it can matter.

The reference result is ``argmax_k linear_resample(p_k)`` on the input grid (what
``PreprocessedCase.argmax_on_original_grid`` computes by resampling every class over the whole volume).
Linear interpolation inside a cell of the model grid is a convex combination of the cell's 8 corner
voxels, so if all 8 corners have the same argmax ``k`` then ``p_k − p_j`` is ≥ 0 (> 0 for ``j < k``) at
every corner and therefore at every interpolated point: the interpolated argmax is ``k`` as well, and
it equals the label of whichever corner nearest-neighbour interpolation picks. Only points in *mixed*
cells (a class boundary runs through them) need the real interpolation.

:func:`labels_on_original_grid` therefore

1. takes the argmax in model space and marks every voxel that is a corner of a mixed cell (in the
   half voxel outside the first/last voxel centre ITK's linear interpolator clamps to the edge voxels,
   which is again a convex combination of one cell's corners);
2. resamples label and mark together with nearest neighbour (one uint8 gather over the input grid);
3. resamples linearly only inside the bounding boxes (per slab) of the marked points and takes the
   argmax there. What is resampled are the differences ``p_k − p_0`` (k ≥ 1): interpolation is linear,
   so their argmax (with 0 for class 0) is the argmax of the interpolated probabilities, with one
   resampling pass less than resampling every class (half the work for two classes).

When more than a fifth of the model voxels are marked (boundaries everywhere, e.g. an untrained
network), steps 2–3 are replaced by resampling the differences over the whole grid.

Outside the model grid both interpolators return the default 0 everywhere, i.e. background. Ties and
float rounding aside the result is identical to the full resampling; the tests check agreement.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lightunetr_core.data.geometry import Geometry, array_to_image, image_to_array, resample_onto

__all__ = ["labels_on_original_grid", "mixed_cell_corners"]

_MARK = 128  # label values must stay below this to share the uint8 with the mark
_SLAB = 16  # slices of the input grid per bounding box of marked points
_DIRECT_ABOVE = 0.2  # fraction of marked model voxels above which every point is interpolated


def mixed_cell_corners(labels: np.ndarray) -> np.ndarray:
    """Boolean ``(X, Y, Z)``: voxels that are a corner of a 2×2×2 cell whose corners do not all share a label."""
    labels = np.asarray(labels)
    if min(labels.shape) < 2:  # a flat axis: cells are 2×2 (or 2, or 1) – compare what exists
        mixed = np.zeros(labels.shape, bool)
        lo, hi = labels.min(), labels.max()
        if lo != hi:
            mixed[:] = True
        return mixed
    base = labels[:-1, :-1, :-1]
    cell = np.zeros(base.shape, bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                if dx or dy or dz:
                    cell |= labels[dx:labels.shape[0] - 1 + dx, dy:labels.shape[1] - 1 + dy,
                                   dz:labels.shape[2] - 1 + dz] != base
    corners = np.zeros(labels.shape, bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corners[dx:labels.shape[0] - 1 + dx, dy:labels.shape[1] - 1 + dy,
                        dz:labels.shape[2] - 1 + dz] |= cell
    return corners


def _sub_geometry(geometry: Geometry, start, stop) -> Geometry:
    start = np.asarray(start, int)
    size = np.asarray(stop, int) - start
    origin = geometry.index_to_physical(start.astype(float))
    return Geometry(tuple(int(s) for s in size), geometry.spacing, tuple(float(o) for o in origin), geometry.direction)


def _exact_argmax_in_box(probabilities: np.ndarray, model: Geometry, target: Geometry) -> np.ndarray:
    """Argmax of the linearly resampled class probabilities on ``target`` (a box of the input grid),
    resampling from the part of the model grid that covers the box plus a margin of one voxel."""
    size = np.asarray(target.size)
    corners = np.array([[a, b, c] for a in (0, size[0] - 1) for b in (0, size[1] - 1) for c in (0, size[2] - 1)], float)
    points = np.array([target.index_to_physical(c) for c in corners])
    indices = np.array([model.physical_to_index(p) for p in points])
    lo = np.maximum(np.floor(indices.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(indices.max(axis=0)).astype(int) + 2, np.asarray(model.size))
    if np.any(hi <= lo):  # the box lies outside the model grid: everything is background there
        return np.zeros(target.size, np.uint8)
    crop_geometry = _sub_geometry(model, lo, hi)
    crop = probabilities[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    # argmax_k p_k = argmax over (0, p_1 - p_0, ..., p_{K-1} - p_0): interpolation is linear, so resampling
    # the K - 1 differences gives the same labels with one resampling pass less (ties → lowest index).
    best = np.zeros(target.size, np.float32)
    best_index = np.zeros(target.size, np.uint8)
    for k in range(1, crop.shape[0]):
        difference = np.subtract(crop[k], crop[0], dtype=np.float32)
        channel = array_to_image(difference, crop_geometry)
        values = image_to_array(resample_onto(channel, target, sitk.sitkLinear))
        better = values > best
        best = np.where(better, values, best)
        best_index[better] = k
    return best_index


def _nearest_codes(coded: np.ndarray, model: Geometry, target: Geometry) -> np.ndarray:
    """Nearest-neighbour values of ``coded`` (model grid) at the points of ``target``, for grids with the
    same direction (``spacing_grid`` keeps it): a separable gather. Points outside the model buffer
    (ITK's ``[-0.5, size - 0.5)``) get 0; points within 1e-4 voxel of that border get the mark, so the
    exact resampling decides them. Any corner of a pure cell is a correct pick, so the rounding rule
    does not have to be ITK's."""
    start = model.physical_to_index(target.origin)
    scale = np.asarray(target.spacing) / np.asarray(model.spacing)
    indices, inside, border = [], [], []
    for axis in range(3):
        c = start[axis] + scale[axis] * np.arange(target.size[axis])
        n = model.size[axis]
        indices.append(np.clip(np.floor(c + 0.5).astype(np.int64), 0, n - 1))
        inside.append((c >= -0.5) & (c < n - 0.5))
        border.append((np.abs(c + 0.5) < 1e-4) | (np.abs(c - (n - 0.5)) < 1e-4))
    out = coded[np.ix_(*indices)]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = -1
        if not inside[axis].all():
            out[np.broadcast_to(~inside[axis].reshape(shape), out.shape)] = 0
        if border[axis].any():
            out[np.broadcast_to(border[axis].reshape(shape), out.shape)] |= _MARK
    return out


def labels_on_original_grid(case, probabilities: np.ndarray) -> np.ndarray:
    """uint8 argmax labels ``[x, y, z]`` on the input's grid from model-space ``(K, X, Y, Z)`` probabilities
    of a :class:`~lightunetr_core.data.preprocessing.PreprocessedCase` (see module docstring)."""
    probabilities = np.asarray(probabilities)
    if not case.resampled:  # model grid = reoriented input grid: no interpolation at all
        return case.reorientation.invert(probabilities.argmax(0).astype(np.uint8))
    if probabilities.shape[0] > _MARK:
        return case.argmax_on_original_grid(probabilities)
    if probabilities.shape[0] == 2:
        model_labels = (probabilities[1] > probabilities[0]).view(np.uint8)
    else:
        model_labels = probabilities.argmax(0).astype(np.uint8)
    mark = mixed_cell_corners(model_labels)
    if mark.mean() > _DIRECT_ABOVE:  # boundaries everywhere: the nearest-neighbour pass would not pay off
        return case.reorientation.invert(_exact_argmax_in_box(probabilities, case.model, case.reoriented))
    coded = model_labels | (mark.astype(np.uint8) * _MARK)
    del mark
    if np.allclose(case.model.direction, case.reoriented.direction, atol=1e-9):
        back = _nearest_codes(coded, case.model, case.reoriented)
    else:
        back = image_to_array(resample_onto(array_to_image(coded, case.model), case.reoriented,
                                            sitk.sitkNearestNeighbor))
    labels = back & (_MARK - 1)
    uncertain = back >= _MARK
    del back
    reoriented: Geometry = case.reoriented
    nz = labels.shape[2]
    for z0 in range(0, nz, _SLAB):
        z1 = min(nz, z0 + _SLAB)
        slab = uncertain[:, :, z0:z1]
        xs = np.flatnonzero(slab.any(axis=(1, 2)))
        if xs.size == 0:
            continue
        ys = np.flatnonzero(slab.any(axis=(0, 2)))
        zs = np.flatnonzero(slab.any(axis=(0, 1)))
        start = np.array([xs[0], ys[0], z0 + zs[0]])
        stop = np.array([xs[-1] + 1, ys[-1] + 1, z0 + zs[-1] + 1])
        box = _sub_geometry(reoriented, start, stop)
        exact = _exact_argmax_in_box(probabilities, case.model, box)
        sl = tuple(slice(a, b) for a, b in zip(start, stop))
        where = uncertain[sl]
        labels[sl][where] = exact[where]
    return case.reorientation.invert(labels)
