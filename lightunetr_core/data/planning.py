"""Plan a dataset's preprocessing when none is given: the target spacing (the manifest's, else the median of
the labelled cases' spacings on canonical RAS axes) and one intensity normalisation per modality."""

from __future__ import annotations

import numpy as np

from lightunetr_core.data.geometry import Reorientation
from lightunetr_core.data.manifest import DatasetError, DatasetSpec
from lightunetr_core.data.preprocessing import IntensityNormalization, PreprocessingPlan

__all__ = ["normalization_for_modality", "make_default_plan", "labeled_spacings"]


def ras_spacing(direction, spacing) -> tuple[float, float, float]:
    """The spacing of an image along the canonical RAS axes it is reoriented to."""
    perm = Reorientation.for_direction(direction).permutation
    return tuple(float(spacing[p]) for p in perm)


def labeled_spacings(spec: DatasetSpec, headers: dict[str, list[dict]]) -> list[tuple[float, float, float]]:
    """RAS spacings of the labelled cases whose headers were read (:func:`.validation.check_headers`)."""
    out = []
    for case in spec.by_role("labeled"):
        infos = headers.get(case.id)
        if infos and infos[0].get("spacing") is not None:
            out.append(ras_spacing(infos[0]["direction"], infos[0]["spacing"]))
    return out


def normalization_for_modality(modality: str):
    """Default intensity normalisation of one channel: CT → clip to [-125, 275] HU and scale to [0, 1]
    (the Pancreas-CT recipe); everything else (MR, PET, ...) → z-score over the whole volume."""
    if modality.strip().upper() == "CT":
        return IntensityNormalization(kind="ct", window=(-125.0, 275.0), output_range=(0.0, 1.0))
    return IntensityNormalization(kind="zscore")


def make_default_plan(spec: DatasetSpec, labeled_spacings: list[tuple[float, float, float]]):
    """The plan used when none is given.

    ``target_spacing``: the manifest's ``preprocessing.target_spacing``, otherwise the median (per
    canonical RAS axis) of the labelled cases' spacings. ``normalization``: the manifest's
    ``preprocessing.normalization`` (one entry per modality: a kind name such as ``"zscore"``/``"ct"``
    or a dict of :class:`~lightunetr_core.data.preprocessing.IntensityNormalization` fields), otherwise
    :func:`normalization_for_modality`.
    """
    section = dict(spec.preprocessing or {})
    problems: list[str] = []
    target = section.get("target_spacing")
    if target is None and labeled_spacings:
        target = [round(float(v), 6) for v in np.median(np.asarray(labeled_spacings, dtype=float), axis=0)]
    norms = section.get("normalization")
    if norms is None:
        normalization = [normalization_for_modality(m) for m in spec.modalities]
    else:
        if not isinstance(norms, list):
            norms = [norms] * len(spec.modalities)
        normalization = []
        if len(norms) != len(spec.modalities):
            problems.append(f'preprocessing.normalization has {len(norms)} entries for {len(spec.modalities)} modalities; give one per modality')
        for n in norms:
            try:
                normalization.append(IntensityNormalization(kind=n) if isinstance(n, str) else IntensityNormalization.from_dict(n))
            except (ValueError, TypeError) as exc:
                problems.append(f"preprocessing.normalization entry {n!r}: {exc}")
    try:
        plan = PreprocessingPlan(target_spacing=target, normalization=normalization or [IntensityNormalization()])
    except ValueError as exc:
        problems.append(f"preprocessing: {exc}")
    if problems:
        raise DatasetError(problems, spec.source)
    return plan
