"""Reading and writing medical images with SimpleITK, with checks that name the problem and the fix.

* :func:`read_image` reads NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), MetaImage (.mha/.mhd) or a folder
  holding one DICOM series, and rejects what the networks cannot use (truncated or corrupt files, 2-D,
  4-D, multi-component, NaN/inf voxels, zero/negative spacing, a singular direction matrix). SimpleITK's
  NIfTI reader turns NaN into 0 before we see it; NRRD and MetaImage keep NaN, and those are refused.
* :func:`write_image` and :func:`write_segmentation_nrrd` write atomically: a temporary file in the
  same folder, then ``os.replace``; an existing file is kept unless ``overwrite=True``.

Geometry is SimpleITK's: physical points in LPS millimetres, arrays indexed ``[z, y, x]`` by
``sitk.GetArrayFromImage`` (use :mod:`lightunetr_core.data.geometry` to get ``[x, y, z]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lightunetr_core import vocabulary
from lightunetr_core.atomic import atomic_path
from lightunetr_core.terminology import terminology_for
from lightunetr_core.vocabulary import IMAGE_EXTENSIONS, WRITE_EXTENSIONS, InputError

from .integrity import IncompleteImageError, check_complete

__all__ = [
    "ImageReadError",
    "OutputExistsError",
    "IMAGE_EXTENSIONS",
    "image_extension",
    "inspect_image",
    "read_image",
    "image_warnings",
    "write_image",
    "write_segmentation_nrrd",
]


class ImageReadError(InputError):
    """An input image cannot be used; the message names the file, the problem and the fix."""


class OutputExistsError(FileExistsError):
    """The output path exists and ``overwrite`` was not requested."""


def image_extension(path: str | os.PathLike) -> str:
    """The recognised ending of ``path`` (".nii.gz", ".seg.nrrd", ...) or its last suffix."""
    return vocabulary.image_extension(Path(path).name) or Path(path).suffix.lower()


def _dicom_series_files(folder: Path, series_id: str | None) -> list[str]:
    reader = sitk.ImageSeriesReader
    ids = list(reader.GetGDCMSeriesIDs(str(folder)) or [])
    if not ids:
        raise ImageReadError(
            f"{folder}: folder holds no DICOM series. Pass a folder with the .dcm files of one series, "
            "or an image file (.nii.gz, .nrrd, .mha)."
        )
    if series_id is None:
        if len(ids) > 1:
            raise ImageReadError(
                f"{folder}: folder holds {len(ids)} DICOM series ({', '.join(ids[:5])}"
                f"{' ...' if len(ids) > 5 else ''}). Put the series to segment in its own folder "
                "(or pass series_id)."
            )
        series_id = ids[0]
    elif series_id not in ids:
        raise ImageReadError(f"{folder}: DICOM series {series_id!r} not found; series present: {', '.join(ids)}")
    files = list(reader.GetGDCMSeriesFileNames(str(folder), series_id))
    if len(files) < 2:
        raise ImageReadError(
            f"{folder}: DICOM series {series_id} has a single slice (a 2-D image). Segmentation needs a 3-D "
            "volume: export the whole series."
        )
    return files


def _check_geometry(where: str, dimension: int, size: Sequence[int], spacing: Sequence[float],
                    direction: Sequence[float], components: int) -> None:
    if dimension == 2:
        raise ImageReadError(
            f"{where}: 2-D image (size {tuple(size)}). Light-UNETR segments 3-D volumes: pass the whole "
            "volume (or the folder of the DICOM series), not a single slice."
        )
    if dimension == 4:
        raise ImageReadError(
            f"{where}: 4-D image (size {tuple(size)}: a time series or several volumes in one file). Extract "
            "one 3-D volume per file (e.g. with SimpleITK: image[:, :, :, t]) and pass each modality as its "
            "own input."
        )
    if dimension != 3:
        raise ImageReadError(f"{where}: {dimension}-D image; a 3-D volume is needed.")
    if min(size) < 2:
        raise ImageReadError(
            f"{where}: image size {tuple(size)} has an axis of length 1 (a single slice, i.e. 2-D). "
            "Pass a 3-D volume with at least 2 voxels along every axis."
        )
    if components != 1:
        raise ImageReadError(
            f"{where}: image has {components} components per voxel (RGB or vector image). Pass one scalar "
            "volume per modality (channel)."
        )
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ImageReadError(
            f"{where}: invalid voxel spacing {tuple(spacing)} (must be positive). Fix the header "
            "(e.g. pixdim in NIfTI, 'space directions' in NRRD) so every spacing is the real voxel size in mm."
        )
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-6:
        raise ImageReadError(
            f"{where}: the direction (orientation) matrix {d.tolist()} is singular or not finite. Fix the "
            "orientation in the header (qform/sform in NIfTI, 'space directions' in NRRD)."
        )


def _reduce_trailing_unit_axis(image: sitk.Image) -> sitk.Image:
    """A 4-D file with one time point is a 3-D volume (common for NIfTI written by some tools)."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        size = list(image.GetSize())
        size[3] = 0
        return sitk.Extract(image, size, [0, 0, 0, 0])
    return image


def inspect_image(path: str | os.PathLike) -> dict:
    """Check an image's header without reading its voxels (cheap pre-flight check).

    Returns a dict with ``size``, ``spacing``, ``origin``, ``direction``. Raises :class:`ImageReadError`
    for a missing/unreadable file or an unusable geometry (the voxel values are checked by
    :func:`read_image`).
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: file not found. Check the path (and quote paths with spaces).")
    if p.is_dir():
        files = _dicom_series_files(p, None)
        info_reader = sitk.ImageFileReader()
        info_reader.SetFileName(files[0])
        try:
            info_reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ImageReadError(f"{p}: cannot read DICOM file {files[0]} ({_first_line(exc)}).") from None
        return {"size": None, "spacing": None, "origin": None, "direction": None, "dicom_files": len(files)}
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _read_failure(p, exc) from None
    size = list(reader.GetSize())
    dimension = reader.GetDimension()
    spacing = list(reader.GetSpacing())
    direction = list(reader.GetDirection())
    if dimension == 4 and size[3] == 1:
        dimension, size, spacing = 3, size[:3], spacing[:3]
        d4 = np.asarray(direction).reshape(4, 4)
        direction = d4[:3, :3].ravel().tolist()
    _check_geometry(str(p), dimension, size, spacing, direction if dimension == 3 else np.eye(3).ravel(),
                    reader.GetNumberOfComponents())
    return {"size": tuple(size), "spacing": tuple(spacing), "origin": tuple(reader.GetOrigin()[:3]),
            "direction": tuple(direction)}


def _read_failure(path: Path, exc: BaseException) -> ImageReadError:
    detail = _first_line(exc)
    if "No such file or directory" in detail and path.exists():
        # MetaImage reports missing voxel data this way (the header was read, the data was short)
        detail = "the voxel data is missing or shorter than the header says"
    if "spacing" in detail.lower():
        return ImageReadError(
            f"{path}: invalid voxel spacing in the header ({detail}). Fix the header (pixdim in NIfTI, "
            "'space directions' in NRRD, ElementSpacing in MetaImage) so every spacing is the positive voxel size in mm."
        )
    return ImageReadError(
        f"{path}: cannot read the image ({detail}). Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), "
        "MetaImage (.mha, .mhd) or a DICOM series folder; check the file is complete and not truncated."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # SimpleITK messages start with a source location; the useful sentence is usually last.
    return lines[-1] if lines else type(exc).__name__


def read_image(path: str | os.PathLike, series_id: str | None = None) -> sitk.Image:
    """Read a 3-D scalar volume (NIfTI, NRRD, MetaImage, or a DICOM series folder) and validate it.

    Raises:
        ImageReadError: missing/unreadable file, 2-D or 4-D data, multi-component voxels, NaN/inf
            voxel values, zero/negative spacing or a singular direction matrix. The message names the
            file, the problem and the fix.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: file not found. Check the path (and quote paths with spaces).")
    try:
        if p.is_dir():
            files = _dicom_series_files(p, series_id)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            # SimpleITK zero-fills some truncated or corrupt files without an error (integrity.py).
            check_complete(p)
            image = sitk.ReadImage(str(p))
    except ImageReadError:
        raise
    except IncompleteImageError as exc:
        raise ImageReadError(str(exc)) from None
    except RuntimeError as exc:
        raise _read_failure(p, exc) from None
    image = _reduce_trailing_unit_axis(image)
    direction = image.GetDirection() if image.GetDimension() == 3 else np.eye(3).ravel()
    _check_geometry(str(p), image.GetDimension(), image.GetSize(), image.GetSpacing(), direction,
                    image.GetNumberOfComponentsPerPixel())
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)  # [z, y, x]
            where = ", ".join(f"({x}, {y}, {z})" for z, y, x in bad[:3].tolist())
            raise ImageReadError(
                f"{p}: {len(bad)} voxel(s) are NaN or infinite (voxel index i, j, k: {where}"
                f"{' ...' if len(bad) > 3 else ''}). Replace them (e.g. with 0 or the background value) before "
                "segmenting or training; the network cannot process non-finite values."
            )
    return image


def image_warnings(image: sitk.Image, where: str) -> list[str]:
    """Things a valid image should not be, said as warnings (the job goes on): a constant image carries
    no information for a network."""
    array = sitk.GetArrayViewFromImage(image)
    if array.size and float(array.min()) == float(array.max()):
        return [f"{where}: every voxel has the value {float(array.min()):g}: a constant image carries no "
                "information (an empty export, a wrong series?)."]
    return []


def _check_output(path: Path, overwrite: bool, allowed: Sequence[str] = WRITE_EXTENSIONS) -> str:
    ext = image_extension(path)
    if ext not in allowed:
        raise ValueError(
            f"{path}: cannot write {ext or 'files without extension'}; use one of {', '.join(allowed)}"
            + (" (.mhd/.nhdr keep voxels in a second file; use .mha or .nrrd)" if ext in (".mhd", ".nhdr") else "")
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: output file already exists. Choose another output path or allow overwriting "
            "(--overwrite / overwrite=True)."
        )
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a folder; give a file name for the output.")
    return ext


def _atomic_write(image: sitk.Image, path: Path, compress: bool = True) -> Path:
    with atomic_path(path) as tmp:
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(tmp))
        writer.SetUseCompression(compress)
        writer.Execute(image)
    return path


def write_image(image: sitk.Image, path: str | os.PathLike, overwrite: bool = False, compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary file in the same folder, then rename).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: unsupported extension (.mhd/.nhdr are two-file formats; use .mha/.nrrd).
    """
    p = Path(path)
    _check_output(p, overwrite)
    return _atomic_write(image, p, compress)


def _color_text(color: Sequence[float]) -> str:
    return " ".join(f"{float(c):.6g}" for c in color)


def _label_field(label: Mapping | object, key: str, default=None):
    if isinstance(label, Mapping):
        return label.get(key, default)
    return getattr(label, key, default)


def write_segmentation_nrrd(
    label_image: sitk.Image,
    path: str | os.PathLike,
    labels: Sequence[Mapping],
    overwrite: bool = False,
) -> Path:
    """Write a label map as a Slicer segmentation (``.seg.nrrd``) with segment names, colours and terminology.

    Args:
        label_image: 3-D integer label map (0 = background).
        path: output file; should end with ``.seg.nrrd`` so Slicer loads it as a segmentation.
        labels: one entry per label ``{"value", "name", "color": [r, g, b] in 0..1, "terminology"
            (optional Slicer terminology entry string)}``; value 0 (background) is skipped.

    Every listed label becomes a segment (an empty one if no voxel has its value), all in layer 0.
    """
    p = Path(path)
    _check_output(p, overwrite, allowed=(".seg.nrrd", ".nrrd"))
    if label_image.GetDimension() != 3 or label_image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("write_segmentation_nrrd needs a 3-D scalar label image")
    array = sitk.GetArrayViewFromImage(label_image)  # [z, y, x]
    max_value = max([int(_label_field(lb, "value")) for lb in labels] + [int(array.max()) if array.size else 0])
    pixel = sitk.sitkUInt8 if max_value < 256 else sitk.sitkUInt16
    image = sitk.Cast(label_image, pixel)
    for key in list(image.GetMetaDataKeys()):
        image.EraseMetaData(key)
    from scipy import ndimage

    objects = ndimage.find_objects(np.asarray(array, dtype=np.int64)) if array.size else []
    meta = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": "",
    }
    index = 0
    for label in labels:
        value = int(_label_field(label, "value"))
        if value == 0:
            continue
        name = str(_label_field(label, "name", f"Segment_{value}"))
        color = _label_field(label, "color") or [0.5, 0.5, 0.5]
        terminology = _label_field(label, "terminology") or terminology_for(name, value)
        box = objects[value - 1] if value - 1 < len(objects) else None
        if box is None:
            extent = "0 -1 0 -1 0 -1"
        else:
            zs, ys, xs = box
            extent = f"{xs.start} {xs.stop - 1} {ys.start} {ys.stop - 1} {zs.start} {zs.stop - 1}"
        prefix = f"Segment{index}_"
        meta.update({
            prefix + "ID": f"Segment_{value}",
            prefix + "Name": name,
            prefix + "NameAutoGenerated": "0",
            prefix + "Color": _color_text(color),
            prefix + "ColorAutoGenerated": "0",
            prefix + "LabelValue": str(value),
            prefix + "Layer": "0",
            prefix + "Extent": extent,
            prefix + "Tags": f"Segmentation.Status:inprogress|TerminologyEntry:{terminology}|",
        })
        index += 1
    for key, value in meta.items():
        image.SetMetaData(key, value)
    return _atomic_write(image, p, compress=True)
