"""From input volumes to the network's tensor and back.

:func:`preprocess_case` takes one SimpleITK image per input channel (and optionally a label map),
checks that they share one grid, reorients to canonical RAS axes (permutation/flip only), resamples
to the plan's target spacing (linear for images, nearest for labels) and normalises each channel.
The returned :class:`PreprocessedCase` remembers the grids so that :meth:`PreprocessedCase.to_original_grid`
puts probabilities or labels back exactly onto the input's voxels.

The same code serves training (agents B1/B2), file inference and Slicer inference, so every path
sees identical tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from lightunetr_core.data.geometry import (
    Geometry,
    Reorientation,
    array_to_image,
    image_to_array,
    reorient_to_ras,
    resample_onto,
    spacing_grid,
)
from lightunetr_core.vocabulary import InputError

__all__ = [
    "IntensityNormalization",
    "PreprocessingPlan",
    "PreprocessedCase",
    "GeometryMismatchError",
    "preprocess_case",
    "NORMALIZATION_KINDS",
]

NORMALIZATION_KINDS = ("zscore", "ct", "minmax", "none")


class GeometryMismatchError(InputError):
    """Images (channels) or image and label do not share one voxel grid."""


@dataclass
class IntensityNormalization:
    """Intensity normalisation of one input channel.

    kinds:
        ``"zscore"``: ``(x - mean) / std``; with ``nonzero=True`` mean/std come from voxels ≠ 0 (brain MR,
        BraTS recipe) and are applied to all voxels (set ``zero_background=True`` to keep zeros at 0).
        ``clip_percentiles=(lo, hi)`` clips to those percentiles first (BraTS: (0, 99.9)).
        ``"ct"``: clip to ``window`` (HU) then scale linearly to ``output_range`` (Pancreas: [-125, 275] → [0, 1]).
        ``"minmax"``: per-volume min/max (or ``clip_percentiles``) → ``output_range``.
        ``"none"``: unchanged (cast to float32).
    """

    kind: str = "zscore"
    nonzero: bool = False
    zero_background: bool = False
    clip_percentiles: tuple[float, float] | None = None
    window: tuple[float, float] = (-125.0, 275.0)
    output_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in NORMALIZATION_KINDS:
            raise ValueError(f"unknown normalization kind {self.kind!r}; choose one of {', '.join(NORMALIZATION_KINDS)}")
        if self.clip_percentiles is not None:
            self.clip_percentiles = tuple(float(v) for v in self.clip_percentiles)
        self.window = tuple(float(v) for v in self.window)
        self.output_range = tuple(float(v) for v in self.output_range)
        if self.window[1] <= self.window[0]:
            raise ValueError(f"CT window {self.window} must have low < high")

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("clip_percentiles", "window", "output_range"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "IntensityNormalization":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        x = np.asarray(array, dtype=np.float32)
        if self.kind == "none":
            return x.copy()
        if self.kind == "ct":
            lo, hi = self.window
            a, b = self.output_range
            return (np.clip(x, lo, hi) - lo) / (hi - lo) * (b - a) + a
        mask = x != 0 if self.nonzero else None
        sample = x[mask] if mask is not None else x.ravel()
        if sample.size == 0:
            sample = x.ravel()
        if self.clip_percentiles is not None:
            lo, hi = np.percentile(sample, self.clip_percentiles)
            x = np.clip(x, lo, hi)
            sample = np.clip(sample, lo, hi)
        if self.kind == "zscore":
            mean, std = float(sample.mean(dtype=np.float64)), float(sample.std(dtype=np.float64))
            out = (x - mean) / max(std, 1e-8)
        else:  # minmax
            lo, hi = float(sample.min()), float(sample.max())
            a, b = self.output_range
            out = (x - lo) / max(hi - lo, 1e-8) * (b - a) + a
        if self.zero_background and mask is not None:
            out = np.where(mask, out, 0.0)
        return out.astype(np.float32, copy=False)


@dataclass
class PreprocessingPlan:
    """How volumes become network input.

    Args:
        target_spacing: (x, y, z) mm along the canonical RAS axes; ``None`` keeps the native spacing.
        orientation: canonical axes; only ``"RAS"`` (MONAI's Orientation("RAS")).
        normalization: one :class:`IntensityNormalization` per input channel.
    """

    target_spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    orientation: str = "RAS"
    normalization: list[IntensityNormalization] = field(default_factory=lambda: [IntensityNormalization()])

    def __post_init__(self) -> None:
        if self.orientation != "RAS":
            raise ValueError(f"orientation {self.orientation!r} is not supported; use 'RAS'")
        if self.target_spacing is not None:
            spacing = tuple(float(s) for s in self.target_spacing)
            if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
                raise ValueError(f"target_spacing must be three positive numbers (mm), got {self.target_spacing}")
            self.target_spacing = spacing
        self.normalization = [n if isinstance(n, IntensityNormalization) else IntensityNormalization.from_dict(n)
                              for n in self.normalization]
        if not self.normalization:
            raise ValueError("a preprocessing plan needs one normalization per input channel")

    @property
    def channels(self) -> int:
        return len(self.normalization)

    def to_dict(self) -> dict:
        return {
            "target_spacing": list(self.target_spacing) if self.target_spacing is not None else None,
            "orientation": self.orientation,
            "normalization": [n.to_dict() for n in self.normalization],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessingPlan":
        return cls(
            target_spacing=tuple(data["target_spacing"]) if data.get("target_spacing") is not None else None,
            orientation=data.get("orientation", "RAS"),
            normalization=[IntensityNormalization.from_dict(n) for n in data.get("normalization", [{}])],
        )


@dataclass
class PreprocessedCase:
    """One case in model space plus what is needed to go back.

    Attributes:
        image: float32 ``(C, X, Y, Z)`` in canonical RAS axes at the target spacing.
        label: uint8 ``(X, Y, Z)`` on the same grid, or ``None``.
        original: grid of the input images.
        reoriented: grid of the inputs after reorientation (same voxels, RAS axes).
        model: grid of ``image`` (reoriented grid resampled to the target spacing).
        reorientation: the permutation/flips applied.
        resampled: whether ``model`` differs from ``reoriented``.
    """

    image: np.ndarray
    label: np.ndarray | None
    original: Geometry
    reoriented: Geometry
    model: Geometry
    reorientation: Reorientation
    resampled: bool

    def to_original_grid(self, array: np.ndarray, is_label: bool = False) -> np.ndarray:
        """Model-space ``(K, X, Y, Z)`` probabilities (or ``(X, Y, Z)`` labels with ``is_label=True``) →
        the same on the input's grid, ``[x, y, z]`` in the input's stored axis order.

        Probabilities are resampled linearly (argmax after this step gives smooth boundaries), labels
        with nearest neighbour. Without resampling this is an exact permutation/flip.
        """
        array = np.asarray(array)
        channel_first = not is_label
        expected = self.model.size
        if tuple(array.shape[-3:]) != expected or array.ndim != (4 if channel_first else 3):
            raise ValueError(f"array of shape {array.shape} is not on the model grid {expected}"
                             + (" with a leading class axis" if channel_first else ""))
        if self.resampled:
            if channel_first:
                image = array_to_image(np.moveaxis(array.astype(np.float32, copy=False), 0, -1), self.model, vector=True)
                back = resample_onto(image, self.reoriented, sitk.sitkLinear)
                array = np.moveaxis(image_to_array(back), -1, 0)
            else:
                image = array_to_image(array, self.model)
                back = resample_onto(image, self.reoriented, sitk.sitkNearestNeighbor)
                array = image_to_array(back)
        return self.reorientation.invert(array, channel_first=channel_first)

    def argmax_on_original_grid(self, probabilities: np.ndarray) -> np.ndarray:
        """Model-space ``(K, X, Y, Z)`` probabilities → uint8 argmax labels on the input's grid.

        Same result as ``to_original_grid(probabilities).argmax(0)`` but resamples one class at a time,
        so memory stays at about two input-sized arrays whatever the number of classes.
        """
        probabilities = np.asarray(probabilities)
        if not self.resampled:
            return self.reorientation.invert(probabilities.argmax(0).astype(np.uint8))
        best = best_index = None
        for k in range(probabilities.shape[0]):
            channel = array_to_image(probabilities[k].astype(np.float32, copy=False), self.model)
            values = image_to_array(resample_onto(channel, self.reoriented, sitk.sitkLinear))
            if best is None:
                best, best_index = values, np.zeros(values.shape, np.uint8)
            else:
                better = values > best
                best = np.where(better, values, best)
                best_index[better] = k
        return self.reorientation.invert(best_index)

    def labels_to_image(self, labels_xyz: np.ndarray) -> sitk.Image:
        """Label array on the original grid (``[x, y, z]``) → uint8 SimpleITK image with the input's geometry."""
        return array_to_image(np.asarray(labels_xyz, dtype=np.uint8), self.original)


def _check_same_grid(reference: sitk.Image, other: sitk.Image, what_ref: str, what_other: str) -> None:
    a, b = Geometry.of(reference), Geometry.of(other)
    if not a.matches(b):
        raise GeometryMismatchError(
            f"{what_other} does not share the voxel grid of {what_ref}:\n  {what_ref}: {a.describe()}\n  "
            f"{what_other}: {b.describe()}\nResample {what_other} onto {what_ref} (e.g. in Slicer: "
            "Resample Scalar/Vector/DWI Volume, or SimpleITK Resample with the first image as reference)."
        )


def preprocess_case(
    images: Sequence[sitk.Image] | sitk.Image,
    plan: PreprocessingPlan,
    label: sitk.Image | None = None,
    channel_names: Sequence[str] | None = None,
) -> PreprocessedCase:
    """Reorient, resample and normalise one case (see module docstring).

    Args:
        images: one 3-D scalar image per channel, all on one grid, in the plan's channel order.
        plan: the :class:`PreprocessingPlan` (normally from the bundle's model card).
        label: optional label map on the same grid as the images.
        channel_names: for error messages.

    Raises:
        GeometryMismatchError: channels or label on different grids (the message shows both).
        ValueError: wrong channel count.
    """
    if isinstance(images, sitk.Image):
        images = [images]
    images = list(images)
    names = list(channel_names) if channel_names else [f"channel {i}" for i in range(len(images))]
    if len(images) != plan.channels:
        raise ValueError(
            f"got {len(images)} input image(s) but the model needs {plan.channels} channel(s)"
            + (f" ({', '.join(channel_names)})" if channel_names and len(channel_names) == plan.channels else "")
            + "; pass one image per channel, in that order."
        )
    for i, img in enumerate(images):
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"{names[i]}: need a 3-D scalar image, got dimension {img.GetDimension()} "
                             f"with {img.GetNumberOfComponentsPerPixel()} component(s)")
    for i in range(1, len(images)):
        _check_same_grid(images[0], images[i], names[0], names[i])
    if label is not None:
        _check_same_grid(images[0], label, "the image", "the label map")

    original = Geometry.of(images[0])
    reorientation = Reorientation.for_direction(original.direction)
    reoriented = reorientation.geometry(original)
    if plan.target_spacing is None or np.allclose(reoriented.spacing, plan.target_spacing, rtol=1e-3, atol=0):
        model, resampled = reoriented, False
    else:
        model, resampled = spacing_grid(reoriented, plan.target_spacing), True

    channels = []
    for img, norm in zip(images, plan.normalization):
        img = sitk.Cast(img, sitk.sitkFloat32)
        oriented, _ = reorient_to_ras(img)
        if resampled:
            oriented = resample_onto(oriented, model, sitk.sitkLinear)
        channels.append(norm(image_to_array(oriented, np.float32)))
    out_label = None
    if label is not None:
        if label.GetPixelID() != sitk.sitkUInt8:
            stats = sitk.MinimumMaximumImageFilter()
            stats.Execute(label)
            if stats.GetMinimum() < 0 or stats.GetMaximum() > 255:
                raise ValueError(
                    f"label map values range from {stats.GetMinimum():g} to {stats.GetMaximum():g}; labels must be "
                    "integers 0..255 (0 = background). Relabel the classes as 0, 1, 2, ..."
                )
        lab = label if label.GetPixelID() == sitk.sitkUInt8 else sitk.Cast(label, sitk.sitkUInt8)
        oriented, _ = reorient_to_ras(lab)
        if resampled:
            oriented = resample_onto(oriented, model, sitk.sitkNearestNeighbor)
        out_label = image_to_array(oriented, np.uint8)
    return PreprocessedCase(
        image=np.stack(channels).astype(np.float32, copy=False),
        label=out_label,
        original=original,
        reoriented=reoriented,
        model=model,
        reorientation=reorientation,
        resampled=resampled,
    )
