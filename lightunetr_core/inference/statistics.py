"""Per-structure statistics of a segmentation and the "label this next" score of an uncertainty map.

:func:`label_statistics`: voxel count and volume (ml, from the voxel spacing) of each class.

:func:`review_score`: how uncertain the model is *where it matters*. The whole-volume mean of the
normalised entropy favours scans with much easy background (a large field of view lowers the mean, a
small one raises it) and says little about the structure. The score is the mean normalised entropy in the
band around the predicted structure — every voxel within ``margin_mm`` of a predicted foreground voxel,
inside and outside it — which is where a reviewer has to correct the boundary. A scan where nothing was
predicted gets the mean entropy of the whole volume and ``foreground_ml`` 0 (a possible miss: review it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

DEFAULT_MARGIN_MM = 5.0


def voxel_volume_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def label_statistics(labels: sitk.Image, card_labels: Sequence[Mapping]) -> list[dict]:
    """One row per foreground label of the card: value, name, voxels, volume_ml (0 for an absent class)."""
    array = sitk.GetArrayViewFromImage(labels)
    counts = np.bincount(np.asarray(array, dtype=np.int64).ravel(), minlength=1 + max(int(lb["value"]) for lb in card_labels))
    per_voxel = voxel_volume_ml(labels)
    rows = []
    for lb in card_labels:
        value = int(lb["value"])
        if value == 0:
            continue
        n = int(counts[value]) if value < len(counts) else 0
        rows.append({"value": value, "name": lb["name"], "voxels": n, "volume_ml": round(n * per_voxel, 4)})
    return rows


def review_score(labels: sitk.Image, uncertainty: sitk.Image, margin_mm: float = DEFAULT_MARGIN_MM) -> dict:
    """{"score", "band_entropy", "mean_entropy", "foreground_ml", "band_voxels"} (see the module doc)."""
    from scipy import ndimage

    lab = sitk.GetArrayViewFromImage(labels) > 0
    ent = np.asarray(sitk.GetArrayViewFromImage(uncertainty), dtype=np.float64)
    mean_entropy = float(ent.mean()) if ent.size else 0.0
    foreground_ml = float(np.count_nonzero(lab)) * voxel_volume_ml(labels)
    if not lab.any():
        return {"score": mean_entropy, "band_entropy": None, "mean_entropy": mean_entropy, "foreground_ml": 0.0,
                "band_voxels": 0, "margin_mm": margin_mm}
    # distance (mm) of every voxel to the nearest predicted foreground voxel, with the voxel spacing ([z, y, x])
    spacing_zyx = tuple(reversed(labels.GetSpacing()))
    distance = ndimage.distance_transform_edt(~lab, sampling=spacing_zyx)
    band = distance <= margin_mm
    band_entropy = float(ent[band].mean())
    return {"score": band_entropy, "band_entropy": band_entropy, "mean_entropy": mean_entropy,
            "foreground_ml": round(foreground_ml, 4), "band_voxels": int(np.count_nonzero(band)), "margin_mm": margin_mm}
