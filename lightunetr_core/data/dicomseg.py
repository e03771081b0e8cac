"""DICOM Segmentation (SEG) output for a DICOM series input, through highdicom (optional extra:
``pip install 'lightunetr-core[dicom]'``).

The label map of ``segment`` lies exactly on the input grid, and SimpleITK's series reader stacks the
series' files in the order ``GetGDCMSeriesFileNames`` returns them, so label slice *k* belongs to file *k*:
the SEG is built with that pixel-for-pixel correspondence (one frame per source image and segment, empty
frames omitted). Segments carry the model's names, colours (as CIELab) and coded terminology
(:mod:`lightunetr_core.terminology`: SNOMED CT for known structures, the private ``99LIGHTUNETR`` scheme
otherwise), marked as made by an automatic artificial-intelligence algorithm.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lightunetr_core.atomic import atomic_output
from lightunetr_core.terminology import ANATOMICAL_STRUCTURE, terminology_for
from lightunetr_core.vocabulary import InputError


class DicomSegError(InputError):
    """A DICOM SEG cannot be written for this input; the message says why and what to do."""


def _require_highdicom():
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise DicomSegError("--format dicom-seg needs highdicom: pip install 'lightunetr-core[dicom]' "
                            "(or pip install highdicom)") from None
    return highdicom, pydicom


def series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the one DICOM series in ``folder``, in the order SimpleITK stacks them."""
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []
    if len(ids) != 1:
        raise DicomSegError(f"{folder}: DICOM SEG output needs a folder with one DICOM series (found {len(ids)})")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def _codes(terminology: str):
    """(category, type) ``(scheme, value, meaning)`` triples from a Slicer terminology entry string."""
    parts = terminology.split("~")
    triples = [tuple(p.split("^")) for p in parts[1:3]] if len(parts) >= 3 else []
    if len(triples) == 2 and all(len(t) == 3 and all(t) for t in triples):
        return triples[0], triples[1]
    return None


def write_dicom_seg(labels: sitk.Image, dicom_folder: str | os.PathLike, path: str | os.PathLike,
                    card_labels: Sequence[Mapping], model_name: str, model_version: str = "",
                    overwrite: bool = False) -> Path:
    """Write ``labels`` (the segmentation of the series in ``dicom_folder``) as a DICOM SEG at ``path``."""
    hd, pydicom = _require_highdicom()
    from pydicom.sr.codedict import codes

    from lightunetr_core import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise DicomSegError(f"{path}: output file already exists. Choose another output or pass --overwrite.")
    files = series_files(dicom_folder)
    sources = [pydicom.dcmread(f) for f in files]
    array = sitk.GetArrayFromImage(labels)  # [z, y, x] = [file, row, column]
    if array.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise DicomSegError(f"the label map {array.shape[::-1]} (x, y, z) is not on the grid of the series in "
                            f"{dicom_folder} ({sources[0].Columns} x {sources[0].Rows} x {len(sources)})")
    algorithm = hd.AlgorithmIdentificationSequence(name=f"Light-UNETR {model_name}"[:64],
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   version=(model_version or __version__)[:64])
    descriptions, masks = [], []
    for label in card_labels:
        value = int(label["value"])
        if value == 0:
            continue
        name = str(label["name"])
        coded = _codes(label.get("terminology") or terminology_for(name, value))
        category, type_ = coded if coded else (ANATOMICAL_STRUCTURE, ("99LIGHTUNETR", str(value), name))
        color = label.get("color")
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=len(descriptions) + 1, segment_label=name[:64],
            segmented_property_category=hd.sr.CodedConcept(category[1], category[0], category[2]),
            segmented_property_type=hd.sr.CodedConcept(type_[1], type_[0], type_[2]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*[int(round(255 * float(c))) for c in color]) if color else None,
        ))
        masks.append(array == value)
    if not descriptions:
        raise DicomSegError("the model defines no foreground label to write")
    stacked = np.stack(masks, axis=-1).astype(np.uint8)  # frames × rows × columns × segments
    try:
        seg = _segmentation(hd, sources, stacked, descriptions, model_name, __version__)
    except (ValueError, AttributeError) as exc:  # highdicom checks the sources against the SEG IOD
        raise DicomSegError(f"{dicom_folder}: a DICOM SEG cannot reference this series ({exc}); write another "
                            "--format (nii.gz, nrrd, seg.nrrd) instead") from None
    with atomic_output(path, "wb") as f:
        seg.save_as(f)
    return path


def _segmentation(hd, sources, stacked, descriptions, model_name, version):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=stacked, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9801,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LightUNETR",
        manufacturer_model_name=f"Light-UNETR {model_name}"[:64], software_versions=f"lightunetr_core {version}",
        device_serial_number="none", series_description=f"Light-UNETR {model_name}"[:64],
        content_description="Light-UNETR automatic segmentation"[:64], content_label="LIGHTUNETR",
    )


def read_dicom_seg_labels(path: str | os.PathLike, dicom_folder: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """A SEG read back as a label map [z, y, x] in the series' file order (segment number = label index of
    the returned names), for checks."""
    hd, pydicom = _require_highdicom()
    seg = hd.seg.segread(str(path))
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series_files(dicom_folder)]
    array = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    names = [d.SegmentLabel for d in seg.SegmentSequence]
    return np.asarray(array), names
