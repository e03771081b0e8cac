"""Segmentation metrics in physical units: Dice, Jaccard, 95 % Hausdorff distance, average surface distance.

Everything is computed per class on label maps (integer arrays, 0 = background) with the voxel
``spacing`` given **in the same axis order as the array** (for a SimpleITK image read with
``GetArrayFromImage`` the array is ``(z, y, x)``, so pass ``image.GetSpacing()[::-1]``).
Distances are in the unit of the spacing (millimetres for medical images).

Definitions (they are those of MONAI's ``compute_hausdorff_distance`` / ``compute_average_surface_distance``
without sub-voxel surfaces, so the two agree to floating-point precision):

* surface of a mask = voxels of the mask that a 6-connected binary erosion removes (voxels on the
  array border count as surface);
* directed distances ``d(A→B)`` = Euclidean distance (mm, via ``scipy.ndimage.distance_transform_edt``
  with ``sampling=spacing``) from every surface voxel centre of A to the nearest surface voxel
  centre of B;
* ``hd95_mm`` = max(95th percentile of d(P→R), 95th percentile of d(R→P)) (linear interpolation);
  ``hd_mm`` = the plain (100 %) Hausdorff distance;
* ``assd_mm`` = mean of the pooled distances d(P→R) ∪ d(R→P) (symmetric average surface distance).

Empty masks are reported, not scored: a class absent from both prediction and reference has status
``"both_empty"`` (Dice/Jaccard/distances NaN), absent from one of them ``"prediction_empty"`` or
``"label_empty"`` (Dice = Jaccard = 0, distances NaN). The authors' reference scripts gave an empty
prediction the score (0, 0, 0, 0) — an HD of 0 mm rewards missing the organ — and measured
distances in voxels; neither is done here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

__all__ = [
    "STATUS_OK",
    "STATUS_BOTH_EMPTY",
    "STATUS_PREDICTION_EMPTY",
    "STATUS_LABEL_EMPTY",
    "ClassMetrics",
    "surface_mask",
    "surface_distances",
    "dice",
    "dice_per_class",
    "binary_metrics",
    "compute_metrics",
    "summarize",
    "METRIC_FIELDS",
]

STATUS_OK = "ok"
STATUS_BOTH_EMPTY = "both_empty"
STATUS_PREDICTION_EMPTY = "prediction_empty"
STATUS_LABEL_EMPTY = "label_empty"

#: Numeric metric fields of :class:`ClassMetrics` that :func:`summarize` averages.
METRIC_FIELDS = ("dice", "jaccard", "hd95_mm", "hd_mm", "assd_mm")


@dataclass
class ClassMetrics:
    """Metrics of one class of one case. Distances in mm (the unit of the spacing); NaN when undefined."""

    label: int
    name: str
    status: str
    dice: float
    jaccard: float
    hd95_mm: float
    hd_mm: float
    assd_mm: float
    prediction_voxels: int
    reference_voxels: int
    prediction_volume_ml: float
    reference_volume_ml: float

    def to_dict(self) -> dict:
        return asdict(self)


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(f"spacing has {len(spacing)} values but the masks have {ndim} dimensions")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return spacing


def _crop_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by one voxel (clipped to the array); None if empty."""
    box = ndimage.find_objects(mask.astype(np.uint8, copy=False))
    if not box or box[0] is None:
        return None
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box[0], mask.shape))


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask: the mask minus its 6-connected erosion (array border = outside)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(d(P→R), d(R→P))`` in spacing units for two non-empty boolean masks.

    The volumes are cropped to the union's bounding box (+1 voxel) first: the distance transform
    stays exact (every surface voxel lies inside the crop) and costs only the object's size.
    """
    prediction = np.asarray(prediction, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"masks differ in shape: {prediction.shape} vs {reference.shape}")
    spacing = _check_spacing(spacing, prediction.ndim)
    if not prediction.any() or not reference.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _crop_box(prediction | reference)
    prediction, reference = prediction[box], reference[box]
    # The one-voxel margin of the crop is background in both masks, so the erosion (array border
    # = outside) and the distance transform are the same as on the full arrays.
    surface_p = surface_mask(prediction)
    surface_r = surface_mask(reference)
    # distance_transform_edt gives each non-zero voxel its distance to the nearest zero voxel,
    # so the transform of ~surface measures the distance to the nearest surface voxel.
    to_reference = ndimage.distance_transform_edt(~surface_r, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~surface_p, sampling=spacing)
    return to_reference[surface_p], to_prediction[surface_r]


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks, ``2|P∩R| / (|P| + |R|)``; NaN when both are empty."""
    n_pred, n_ref = int(np.count_nonzero(prediction)), int(np.count_nonzero(reference))
    if n_pred + n_ref == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(np.logical_and(prediction, reference))) / (n_pred + n_ref)


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> dict[int, float]:
    """Dice of every foreground class 1..K-1 of two label maps; NaN where the class is absent from both."""
    return {c: dice(prediction == c, reference == c) for c in range(1, num_classes)}


def binary_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] | None = None,
    percentile: float = 95.0,
) -> dict:
    """All metrics for one pair of boolean masks; returns a dict with the fields of :class:`ClassMetrics`
    except ``label`` and ``name``."""
    prediction = np.asarray(prediction, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction and reference differ in shape: {prediction.shape} vs {reference.shape}")
    spacing = _check_spacing(spacing, prediction.ndim)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    n_pred = int(np.count_nonzero(prediction))
    n_ref = int(np.count_nonzero(reference))
    nan = float("nan")
    result = {
        "prediction_voxels": n_pred,
        "reference_voxels": n_ref,
        "prediction_volume_ml": n_pred * voxel_ml,
        "reference_volume_ml": n_ref * voxel_ml,
        "hd95_mm": nan,
        "hd_mm": nan,
        "assd_mm": nan,
    }
    if n_pred == 0 and n_ref == 0:
        result.update(status=STATUS_BOTH_EMPTY, dice=nan, jaccard=nan)
        return result
    if n_pred == 0 or n_ref == 0:
        result.update(
            status=STATUS_PREDICTION_EMPTY if n_pred == 0 else STATUS_LABEL_EMPTY, dice=0.0, jaccard=0.0
        )
        return result
    intersection = int(np.count_nonzero(prediction & reference))
    result["status"] = STATUS_OK
    result["dice"] = dice(prediction, reference)
    result["jaccard"] = intersection / (n_pred + n_ref - intersection)
    d_pr, d_rp = surface_distances(prediction, reference, spacing)
    q = percentile / 100.0
    result["hd95_mm"] = float(max(np.quantile(d_pr, q), np.quantile(d_rp, q)))
    result["hd_mm"] = float(max(d_pr.max(), d_rp.max()))
    result["assd_mm"] = float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))
    return result


def compute_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Iterable[int] | None = None,
    label_names: Mapping[int, str] | None = None,
    percentile: float = 95.0,
) -> list[ClassMetrics]:
    """Per-class metrics of two label maps on the same grid.

    Args:
        prediction, reference: integer label maps of equal shape (0 = background).
        spacing: voxel size per array axis (mm), same axis order as the arrays; default 1.
        labels: classes to evaluate; default every non-zero value found in either map.
        label_names: optional ``{label: name}``; default ``"label_<n>"``.
        percentile: Hausdorff percentile (95 → HD95).
    """
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction and reference differ in shape: {prediction.shape} vs {reference.shape}")
    for name, array in (("prediction", prediction), ("reference", reference)):
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise ValueError(
                f"the {name} holds non-integer values: it looks like a probability map, not a label map; "
                "threshold or argmax it first"
            )
    spacing = _check_spacing(spacing, prediction.ndim)
    if labels is None:
        labels = sorted((set(np.unique(prediction).tolist()) | set(np.unique(reference).tolist())) - {0})
    names = dict(label_names or {})
    out = []
    for label in labels:
        label = int(label)
        values = binary_metrics(prediction == label, reference == label, spacing, percentile)
        out.append(ClassMetrics(label=label, name=names.get(label, f"label_{label}"), **values))
    return out


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "n": 0}
    array = np.asarray(finite, dtype=float)
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "median": float(np.median(array)),
        "n": int(array.size),
    }


@dataclass
class _ClassSummary:
    label: int
    name: str
    counts: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def summarize(cases: Sequence[Sequence[ClassMetrics]]) -> dict:
    """Aggregate per-case results (one list of :class:`ClassMetrics` per case) per class.

    Returns ``{"per_class": {label: {"name", "counts": {status: n}, "dice": {"mean","std","median","n"}, ...}},
    "mean_over_classes": {metric: mean of the per-class means}}``. NaN values (undefined metrics of
    empty cases) are left out of the statistics; ``n`` says how many values each one averages and
    ``counts`` how many cases had each status.
    """
    by_label: dict[int, _ClassSummary] = {}
    values: dict[int, dict[str, list[float]]] = {}
    for case in cases:
        for item in case:
            summary = by_label.setdefault(item.label, _ClassSummary(item.label, item.name))
            summary.counts[item.status] = summary.counts.get(item.status, 0) + 1
            bucket = values.setdefault(item.label, {key: [] for key in METRIC_FIELDS})
            for key in METRIC_FIELDS:
                bucket[key].append(getattr(item, key))
    per_class = {}
    for label in sorted(by_label):
        summary = by_label[label]
        entry = {"name": summary.name, "counts": dict(sorted(summary.counts.items()))}
        for key in METRIC_FIELDS:
            entry[key] = _stats(values[label][key])
        per_class[label] = entry
    overall = {}
    for key in METRIC_FIELDS:
        means = [entry[key]["mean"] for entry in per_class.values() if not math.isnan(entry[key]["mean"])]
        overall[key] = float(np.mean(means)) if means else float("nan")
    return {"per_class": per_class, "mean_over_classes": overall}
