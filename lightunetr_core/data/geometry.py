"""Image geometry: [x, y, z] arrays, canonical (RAS) reorientation, resampling and its inverse.

Conventions
-----------
* SimpleITK works in LPS millimetres and ``sitk.GetArrayFromImage`` returns ``[z, y, x]``; our arrays
  (and MONAI's, and the network's ``(B, C, X, Y, Z)``) are ``[x, y, z]``: :func:`image_to_array` and
  :func:`array_to_image` convert.
* Canonical orientation is "RAS" as MONAI's ``Orientation("RAS")`` defines it: after reorientation,
  index axis 0 increases most nearly towards patient Right (-x in LPS), axis 1 towards Anterior
  (-y in LPS), axis 2 towards Superior (+z). The choice of axis and
  sign follows nibabel's ``io_orientation`` (the algorithm MONAI uses): nearest orthonormal matrix,
  then input axes in order take the world axis with the largest absolute cosine. Only permutations and
  flips are applied (no interpolation); an oblique direction matrix stays oblique, permuted.
* Resampling keeps the direction and the centre of the field of view; :func:`resample_onto` maps any
  image onto another grid through physical space (the exact inverse of a resampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = [
    "Geometry",
    "Reorientation",
    "image_to_array",
    "array_to_image",
    "ras_orientation",
    "reorient_to_ras",
    "resample_to_spacing",
    "resample_onto",
    "spacing_grid",
    "LPS_TO_RAS",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """The grid of a 3-D image: ``size`` (x, y, z), ``spacing`` (mm), ``origin`` (LPS mm), ``direction``
    (row-major 3×3, columns = axis directions in LPS)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical(self, index: Sequence[float]) -> np.ndarray:
        """Continuous (x, y, z) voxel index → LPS point."""
        return np.asarray(self.origin) + self.direction_matrix @ (np.asarray(index, float) * np.asarray(self.spacing))

    def physical_to_index(self, point: Sequence[float]) -> np.ndarray:
        return np.linalg.solve(self.direction_matrix, np.asarray(point, float) - np.asarray(self.origin)) / np.asarray(self.spacing)

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def empty_image(self, pixel_id: int = sitk.sitkUInt8) -> sitk.Image:
        return self.apply_to(sitk.Image(list(self.size), pixel_id))

    def differences(self, other: "Geometry", tol: float = 1e-4) -> list[str]:
        """What differs between two grids ("size ... vs ...", "origin ... vs ... mm", ...); empty when they
        match: same size, spacing within ``tol`` relative, origin within ``tol`` × the largest spacing (at
        least ``tol`` mm), direction within ``tol``."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size} vs {other.size}")
        if not np.allclose(self.spacing, other.spacing, rtol=tol, atol=0):
            out.append(f"spacing {tuple(round(s, 6) for s in self.spacing)} vs {tuple(round(s, 6) for s in other.spacing)} mm")
        if not np.allclose(self.origin, other.origin, atol=max(tol, tol * max(self.spacing))):
            out.append(f"origin {tuple(round(o, 4) for o in self.origin)} vs {tuple(round(o, 4) for o in other.origin)} mm")
        if not np.allclose(self.direction, other.direction, atol=tol):
            out.append(f"direction {tuple(round(d, 4) for d in self.direction)} vs "
                       f"{tuple(round(d, 4) for d in other.direction)}")
        return out

    def matches(self, other: "Geometry", tol: float = 1e-4) -> bool:
        return not self.differences(other, tol)

    def describe(self) -> str:
        return (f"size {self.size}, spacing {tuple(round(s, 4) for s in self.spacing)}, origin "
                f"{tuple(round(o, 3) for o in self.origin)}, direction {tuple(round(d, 4) for d in self.direction)}")


def image_to_array(image: sitk.Image, dtype=None) -> np.ndarray:
    """SimpleITK image → numpy ``[x, y, z]`` (``[x, y, z, c]`` for vector images); a copy."""
    array = sitk.GetArrayFromImage(image)
    array = array.transpose(2, 1, 0, 3) if array.ndim == 4 else array.transpose(2, 1, 0)
    array = np.ascontiguousarray(array)
    return array.astype(dtype, copy=False) if dtype is not None else array


def array_to_image(array: np.ndarray, reference: sitk.Image | Geometry | None = None,
                   vector: bool = False) -> sitk.Image:
    """numpy ``[x, y, z]`` (or ``[x, y, z, c]`` with ``vector=True``) → SimpleITK image with the
    geometry of ``reference`` (an image or a :class:`Geometry`)."""
    array = np.asarray(array)
    if vector:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0, 3)), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    if reference is not None:
        geometry = reference if isinstance(reference, Geometry) else Geometry.of(reference)
        if tuple(image.GetSize()) != geometry.size:
            raise ValueError(f"array size {tuple(image.GetSize())} does not match the reference grid {geometry.size}")
        geometry.apply_to(image)
    return image


def ras_orientation(direction: Sequence[float]) -> list[tuple[int, int]]:
    """For each array axis, the RAS world axis (0=R, 1=A, 2=S) it follows and the sign (+1/-1).

    Same rule as nibabel's ``io_orientation`` applied to the RAS affine (what MONAI's
    ``Orientation("RAS")`` uses): polar decomposition to the nearest orthonormal matrix, then axes
    in order pick the largest remaining absolute cosine.
    """
    d_ras = LPS_TO_RAS @ np.asarray(direction, dtype=float).reshape(3, 3)
    d_ras = d_ras / np.linalg.norm(d_ras, axis=0, keepdims=True)
    u, _, vt = np.linalg.svd(d_ras)
    rot = u @ vt
    result = []
    for axis in range(3):
        column = rot[:, axis]
        world = int(np.argmax(np.abs(column)))
        result.append((world, 1 if column[world] > 0 else -1))
        rot[world, :] = 0
    return result


@dataclass(frozen=True)
class Reorientation:
    """Permutation + flips taking an array from its stored axis order to canonical RAS axes.

    ``permutation[j]`` is the stored axis that becomes canonical axis ``j``; ``flips[j]`` says whether
    canonical axis ``j`` is reversed. Arrays are ``[x, y, z]`` (optionally with a leading channel axis).
    """

    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def for_direction(cls, direction: Sequence[float]) -> "Reorientation":
        ornt = ras_orientation(direction)
        permutation = [0, 0, 0]
        flips = [False, False, False]
        for stored_axis, (world, sign) in enumerate(ornt):
            permutation[world] = stored_axis
            flips[world] = sign < 0
        return cls(tuple(permutation), tuple(flips))

    @property
    def is_identity(self) -> bool:
        return self.permutation == (0, 1, 2) and not any(self.flips)

    def apply(self, array: np.ndarray, channel_first: bool = False) -> np.ndarray:
        """Stored ``[x, y, z]`` (or ``[C, x, y, z]``) → canonical."""
        offset = 1 if channel_first else 0
        axes = list(range(offset)) + [p + offset for p in self.permutation]
        out = np.transpose(array, axes)
        flip_axes = tuple(j + offset for j in range(3) if self.flips[j])
        if flip_axes:
            out = np.flip(out, flip_axes)
        return np.ascontiguousarray(out)

    def invert(self, array: np.ndarray, channel_first: bool = False) -> np.ndarray:
        """Canonical ``[x, y, z]`` (or ``[C, x, y, z]``) → stored order (exact inverse of :meth:`apply`)."""
        offset = 1 if channel_first else 0
        flip_axes = tuple(j + offset for j in range(3) if self.flips[j])
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = np.argsort(self.permutation)
        axes = list(range(offset)) + [int(i) + offset for i in inverse]
        return np.ascontiguousarray(np.transpose(out, axes))

    def geometry(self, stored: Geometry) -> Geometry:
        """The grid of the reoriented image: same voxels at the same physical places."""
        d = stored.direction_matrix
        size, spacing, columns = [], [], []
        corner = [0.0, 0.0, 0.0]
        for j, src in enumerate(self.permutation):
            size.append(stored.size[src])
            spacing.append(stored.spacing[src])
            sign = -1.0 if self.flips[j] else 1.0
            columns.append(sign * d[:, src])
            if self.flips[j]:
                corner[src] = stored.size[src] - 1
        origin = stored.index_to_physical(corner)
        direction = np.stack(columns, axis=1)
        return Geometry(tuple(size), tuple(spacing), tuple(float(o) for o in origin),
                        tuple(float(v) + 0.0 for v in direction.ravel()))


def reorient_to_ras(image: sitk.Image) -> tuple[sitk.Image, Reorientation]:
    """Permute/flip ``image`` to canonical RAS axes (no interpolation). Returns the image and the
    :class:`Reorientation` that undoes it (``reorientation.invert(array)``)."""
    reorientation = Reorientation.for_direction(image.GetDirection())
    if reorientation.is_identity:
        return image, reorientation
    geometry = reorientation.geometry(Geometry.of(image))
    array = reorientation.apply(image_to_array(image), channel_first=False) if image.GetNumberOfComponentsPerPixel() == 1 \
        else np.moveaxis(reorientation.apply(np.moveaxis(image_to_array(image), -1, 0), channel_first=True), 0, -1)
    out = array_to_image(array, geometry, vector=image.GetNumberOfComponentsPerPixel() > 1)
    return out, reorientation


def spacing_grid(geometry: Geometry, spacing: Sequence[float]) -> Geometry:
    """The grid with ``spacing`` covering the same field of view as ``geometry`` (same direction, same
    centre; size = round(extent / spacing), at least 1)."""
    spacing = np.asarray([float(s) for s in spacing])
    old_spacing = np.asarray(geometry.spacing)
    old_size = np.asarray(geometry.size)
    size = np.maximum(1, np.round(old_size * old_spacing / spacing).astype(int))
    centre = geometry.index_to_physical((old_size - 1) / 2.0)
    origin = centre - geometry.direction_matrix @ ((size - 1) / 2.0 * spacing)
    return Geometry(tuple(int(s) for s in size), tuple(float(s) for s in spacing),
                    tuple(float(o) for o in origin), geometry.direction)


def resample_onto(image: sitk.Image, target: sitk.Image | Geometry, interpolator: int = sitk.sitkLinear,
                  default_value: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto the grid of ``target`` through physical space (identity transform)."""
    geometry = target if isinstance(target, Geometry) else Geometry.of(target)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in geometry.size])
    resampler.SetOutputSpacing(geometry.spacing)
    resampler.SetOutputOrigin(geometry.origin)
    resampler.SetOutputDirection(geometry.direction)
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(default_value)
    resampler.SetOutputPixelType(image.GetPixelID())
    resampler.SetTransform(sitk.Transform(3, sitk.sitkIdentity))
    return resampler.Execute(image)


def resample_to_spacing(image: sitk.Image, spacing: Sequence[float], is_label: bool = False) -> sitk.Image:
    """Resample to ``spacing`` (mm, x/y/z of the image's own axes): linear for images, nearest for labels."""
    grid = spacing_grid(Geometry.of(image), spacing)
    return resample_onto(image, grid, sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
