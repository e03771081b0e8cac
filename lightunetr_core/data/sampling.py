"""Random training patches from a :class:`~lightunetr_core.data.cache.PreparedDataset` (the crops of the authors' code_cse/dataloaders/).

:class:`PatchSampler` draws mini-batches of crops:

* cases are visited in shuffled epochs (a fresh random permutation each time the previous one is used
  up), like the reference's shuffling DataLoader;
* a volume smaller than the patch along an axis is zero-padded by ``(P − S)//2 + 1`` voxels on each
  side of that axis first (the reference rule), so the crop always fits; the padding value is 0 in the
  normalised intensity space;
* labelled crops: with probability ``foreground_oversample`` a crop is centred on a random voxel of a
  random foreground class present in the case (clamped so it stays inside the padded volume); the
  others are uniform random crops (``foreground_oversample=0`` reproduces the reference exactly);
* unlabelled crops are uniform random, or centred (``center_crop=True``, the reference's BraTS rule).

All randomness comes from the ``torch.Generator`` given to the sampler. Crops are copied straight out of
the (memory-mapped) arrays; padding is never materialised for the whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["PatchSampler", "padding_for", "crop_with_padding"]


def padding_for(shape: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """Zero padding per side, per axis: ``(P − S)//2 + 1`` where the volume is smaller than the patch, else 0."""
    shape = np.asarray(shape, dtype=np.int64)
    patch = np.asarray(patch, dtype=np.int64)
    return np.where(shape < patch, (patch - shape) // 2 + 1, 0)


def crop_with_padding(array: np.ndarray, start: Sequence[int], patch: Sequence[int], pad: Sequence[int]) -> np.ndarray:
    """Crop ``patch`` voxels starting at ``start`` (coordinates in the volume padded by ``pad`` per side)
    from the last three axes of ``array``; voxels outside the volume are 0."""
    spatial = array.shape[-3:]
    out = np.zeros(array.shape[:-3] + tuple(int(p) for p in patch), dtype=array.dtype)
    src, dst = [], []
    for axis in range(3):
        lo = int(start[axis]) - int(pad[axis])  # volume coordinate of the crop's first voxel
        a0, a1 = max(lo, 0), min(lo + int(patch[axis]), spatial[axis])
        if a1 <= a0:
            return out
        src.append(slice(a0, a1))
        dst.append(slice(a0 - lo, a1 - lo))
    lead = (slice(None),) * (array.ndim - 3)
    out[lead + tuple(dst)] = array[lead + tuple(src)]
    return out


class _EpochOrder:
    """Endless stream of case indices in shuffled epochs (all randomness from ``generator``)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n = n
        self.generator = generator
        self.queue: list[int] = []

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.queue:
                self.queue = torch.randperm(self.n, generator=self.generator).tolist()
            out.append(self.queue.pop(0))
        return out


class PatchSampler:
    """Draws labelled and unlabelled training crops.

    Args:
        prepared_dataset: a :class:`~lightunetr_core.data.cache.PreparedDataset` (uses ``.labeled`` and
            ``.unlabeled``), or any object with those lists of cases (``.image`` C×X×Y×Z, ``.label``,
            ``.volume_min``/``.volume_max``, ``.class_locations``).
        patch_size: (X, Y, Z) crop size in voxels.
        generator: the only source of randomness.
        foreground_oversample: fraction of labelled crops centred on a foreground voxel (0 … 1).
        center_crop: default for :meth:`sample_unlabeled` (centre instead of random crops).
    """

    def __init__(
        self,
        prepared_dataset,
        patch_size: Sequence[int],
        generator: torch.Generator,
        foreground_oversample: float = 0.33,
        center_crop: bool = False,
    ) -> None:
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != 3 or min(patch) < 1:
            raise ValueError(f"patch_size must be three positive integers (X, Y, Z), got {tuple(patch_size)}")
        if not 0.0 <= float(foreground_oversample) <= 1.0:
            raise ValueError(f"foreground_oversample must lie in [0, 1], got {foreground_oversample}")
        if not isinstance(generator, torch.Generator):
            raise TypeError("generator must be a torch.Generator (seed it for reproducible sampling)")
        self.patch = patch
        self.generator = generator
        self.foreground_oversample = float(foreground_oversample)
        self.center_crop = bool(center_crop)
        self.labeled = list(prepared_dataset.labeled)
        self.unlabeled = list(getattr(prepared_dataset, "unlabeled", []) or [])
        for case in self.labeled:
            if case.label is None:
                raise ValueError(f"labelled case {case.id!r} has no label")
        self._labeled_order = _EpochOrder(len(self.labeled), generator) if self.labeled else None
        self._unlabeled_order = _EpochOrder(len(self.unlabeled), generator) if self.unlabeled else None
        # Foreground classes per labelled case (those with at least one location).
        self._classes = [
            np.asarray(sorted(k for k, v in (case.class_locations or {}).items() if len(v)), dtype=np.int64)
            for case in self.labeled
        ]

    # ------------------------------------------------------------------------------------------
    def _random_starts(self, cases: list, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform crop starts (padded coordinates) and the padding, (n, 3) each."""
        shapes = np.asarray([c.image.shape[-3:] for c in cases], dtype=np.int64)
        pads = np.stack([padding_for(s, self.patch) for s in shapes]) if n else np.zeros((0, 3), np.int64)
        span = shapes + 2 * pads - np.asarray(self.patch) + 1  # number of valid starts per axis (≥ 1)
        u = torch.rand((n, 3), generator=self.generator, dtype=torch.float64).numpy()
        starts = np.minimum(np.floor(u * span).astype(np.int64), span - 1)
        return starts, pads

    def _center_starts(self, cases: list) -> tuple[np.ndarray, np.ndarray]:
        shapes = np.asarray([c.image.shape[-3:] for c in cases], dtype=np.int64)
        pads = np.stack([padding_for(s, self.patch) for s in shapes])
        starts = np.round((shapes + 2 * pads - np.asarray(self.patch)) / 2.0).astype(np.int64)
        return starts, pads

    def _collect(self, cases: list, indices: list[int], starts: np.ndarray, pads: np.ndarray, with_label: bool) -> dict:
        n = len(cases)
        channels = cases[0].image.shape[0] if n else 0
        image = np.zeros((n, channels) + self.patch, dtype=np.float32)
        label = np.zeros((n,) + self.patch, dtype=np.int64) if with_label else None
        vmin = np.zeros((n, channels), dtype=np.float32)
        vmax = np.zeros((n, channels), dtype=np.float32)
        for i, case in enumerate(cases):
            if case.image.shape[0] != channels:
                raise ValueError(f"case {case.id!r} has {case.image.shape[0]} channel(s), others {channels}")
            image[i] = crop_with_padding(case.image, starts[i], self.patch, pads[i])
            if with_label:
                label[i] = crop_with_padding(case.label, starts[i], self.patch, pads[i])
            vmin[i] = case.volume_min
            vmax[i] = case.volume_max
        # Voxels of the crop that lie inside the volume (not zero padding): per-axis ranges, outer product.
        valid = np.ones((n,) + self.patch, dtype=bool)
        if n:
            sizes = np.asarray([c.image.shape[-3:] for c in cases], dtype=np.int64)
            for axis in range(3):
                coords = (starts[:, axis] - pads[:, axis])[:, None] + np.arange(self.patch[axis])[None, :]
                inside = (coords >= 0) & (coords < sizes[:, axis, None])
                shape = [n, 1, 1, 1]
                shape[axis + 1] = self.patch[axis]
                valid &= inside.reshape(shape)
        batch = {
            "image": torch.from_numpy(image),
            "valid": torch.from_numpy(valid),
            "volume_min": torch.from_numpy(vmin),
            "volume_max": torch.from_numpy(vmax),
            "case_index": torch.as_tensor(indices, dtype=torch.int64),
            "crop_start": torch.from_numpy(starts - pads),  # in volume coordinates (may be negative)
        }
        if with_label:
            batch["label"] = torch.from_numpy(label)
        return batch

    # ------------------------------------------------------------------------------------------
    def sample_labeled(self, n: int) -> dict:
        """``n`` labelled crops: "image" (n, C, *patch) float32, "label" (n, *patch) int64,
        "volume_min"/"volume_max" (n, C) float32 of the whole case, "case_index" (n,) int64 (index into
        ``prepared_dataset.labeled``), "foreground" (n,) bool (crop centred on a foreground voxel),
        "crop_start" (n, 3) first voxel of the crop in volume coordinates, "valid" (n, *patch) bool (inside the
        volume, i.e. not zero padding)."""
        if not self.labeled:
            raise ValueError("no labelled cases to sample from; the dataset needs at least one labelled case")
        indices = self._labeled_order.take(n)
        cases = [self.labeled[i] for i in indices]
        starts, pads = self._random_starts(cases, n)
        forced = (torch.rand(n, generator=self.generator, dtype=torch.float64) < self.foreground_oversample).numpy()
        picks = torch.rand((n, 2), generator=self.generator, dtype=torch.float64).numpy()
        fg = np.zeros(n, dtype=bool)
        half = np.asarray(self.patch) // 2
        for i, (case_i, case) in enumerate(zip(indices, cases)):
            classes = self._classes[case_i]
            if not forced[i] or classes.size == 0:
                continue
            k = int(classes[min(int(picks[i, 0] * classes.size), classes.size - 1)])
            locations = case.class_locations[k]
            centre = locations[min(int(picks[i, 1] * len(locations)), len(locations) - 1)].astype(np.int64)
            span = np.asarray(case.image.shape[-3:]) + 2 * pads[i] - np.asarray(self.patch)
            starts[i] = np.clip(centre + pads[i] - half, 0, span)
            fg[i] = True
        batch = self._collect(cases, indices, starts, pads, with_label=True)
        batch["foreground"] = torch.from_numpy(fg)
        return batch

    def sample_unlabeled(self, n: int, center_crop: bool | None = None) -> dict:
        """``n`` unlabelled crops: the same keys as :meth:`sample_labeled` without "label"/"foreground";
        "case_index" indexes ``prepared_dataset.unlabeled``. ``center_crop`` overrides the sampler default."""
        if not self.unlabeled:
            raise ValueError("no unlabelled cases to sample from; add unlabelled cases (role \"unlabeled\") for semi-supervised training")
        indices = self._unlabeled_order.take(n)
        cases = [self.unlabeled[i] for i in indices]
        centre = self.center_crop if center_crop is None else bool(center_crop)
        starts, pads = self._center_starts(cases) if centre else self._random_starts(cases, n)
        return self._collect(cases, indices, starts, pads, with_label=False)
