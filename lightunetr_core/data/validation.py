"""Check a described dataset before anything is written: case counts against the batch, every file's header,
the classes of folder datasets without declared labels, and each case's content (readable, 3-D scalar, NaN
free, label on the image grid, label values declared). Problems make a case unusable and are collected per
case; warnings (a constant image, an empty label) are only reported.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lightunetr_core.data.geometry import Geometry
from lightunetr_core.data.io import ImageReadError, image_warnings, inspect_image, read_image
from lightunetr_core.data.manifest import CaseSpec, DatasetSpec

__all__ = ["check_counts", "check_headers", "labels_from_files", "check_case_content"]


def check_counts(spec: DatasetSpec, labeled_batch_size: int, unlabeled_batch_size: int,
                 require_unlabeled: bool) -> list[str]:
    """Enough labelled (and, for CSE, unlabelled) cases for one training batch."""
    problems = []
    n_lab = len(spec.by_role("labeled"))
    n_unlab = len(spec.by_role("unlabeled"))
    if n_lab == 0:
        problems.append('no labelled case: at least one case needs role "labeled" and a label (folder layout: imagesTr/ + labelsTr/)')
    elif n_lab < labeled_batch_size:
        problems.append(f"{n_lab} labelled case(s) but the batch needs {labeled_batch_size}; add labelled cases or lower the labelled batch size")
    if require_unlabeled and n_unlab == 0:
        problems.append('no unlabelled case: semi-supervised (CSE) training needs cases with role "unlabeled" (folder: imagesUnlabeled/); or train supervised only')
    elif n_unlab < unlabeled_batch_size:
        problems.append(f"{n_unlab} unlabelled case(s) but the batch needs {unlabeled_batch_size}; add unlabelled cases or lower the unlabelled batch size")
    return problems


def check_headers(spec: DatasetSpec) -> tuple[dict[str, list[dict]], list[str]]:
    """Every file exists and has a readable 3-D header. Returns ({case id: header infos of its images (and
    label)} for the cases whose headers are all readable, problems)."""
    infos: dict[str, list[dict]] = {}
    problems: list[str] = []
    for case in spec.cases:
        ok, headers = True, []
        for path in case.images + ([case.label] if case.label is not None and case.role != "unlabeled" else []):
            try:
                headers.append(inspect_image(path))
            except ImageReadError as exc:
                problems.append(f"case {case.id!r}: {exc}")
                ok = False
        if ok:
            infos[case.id] = headers
    return infos, problems


def labels_from_files(spec: DatasetSpec, readable: set[str]) -> list[str]:
    """A folder dataset without declared classes: ``spec.labels`` from the values found in its label files
    (``class_<k>``). Returns the problems (values that are not 0..K)."""
    values: set[int] = {0}
    for case in spec.cases:
        if case.label is not None and case.id in readable and case.role != "unlabeled":
            try:
                label_image = read_image(case.label)  # keep a reference: the array view needs the image alive
                values |= {int(v) for v in np.unique(sitk.GetArrayViewFromImage(label_image))}
            except (ImageReadError, ValueError):
                pass
    spec.labels = {v: ("background" if v == 0 else f"class_{v}") for v in sorted(values)}
    if sorted(spec.labels) != list(range(len(spec.labels))):
        return [f"label values {sorted(spec.labels)} found in the label files are not consecutive 0..K; renumber them "
                "or declare \"labels\" in dataset.json"]
    return []


def check_case_content(case: CaseSpec, spec: DatasetSpec, problems: list[str], warnings: list[str]):
    """Read a case fully and check it. Returns (sitk images, sitk label or None) or None if unusable.
    Problems make the case unusable; warnings (a constant image, an empty label) are reported only."""
    tag = f"case {case.id!r}"
    images = []
    ok = True
    for n, path in enumerate(case.images):
        try:
            images.append(read_image(path))
        except ImageReadError as exc:
            problems.append(f"{tag}: {exc}")
            ok = False
        else:
            warnings += image_warnings(images[-1], f"{tag}: {path.name}")
    if ok and len(images) > 1:
        g0 = Geometry.of(images[0])
        for n, img in enumerate(images[1:], start=1):
            g = Geometry.of(img)
            if not g.matches(g0):
                problems.append(
                    f"{tag}: image {n} ({case.images[n].name}, {spec.modalities[n] if n < len(spec.modalities) else '?'}) has a different grid "
                    f"from image 0 ({g.describe()} vs {g0.describe()}); register/resample all modalities of a case onto one grid"
                )
                ok = False
    label = None
    if case.label is not None and case.role != "unlabeled":
        try:
            label = read_image(case.label)
        except ImageReadError as exc:
            problems.append(f"{tag}: label {exc}")
            return None
        if images and ok:
            gi, gl = Geometry.of(images[0]), Geometry.of(label)
            if not gl.matches(gi):
                problems.append(
                    f"{tag}: label {case.label.name} does not lie on the image grid (label {gl.describe()}; image {gi.describe()}); "
                    "resample the label onto the image (nearest neighbour), or if only the header is wrong copy the image's "
                    "spacing/origin/direction into the label"
                )
                ok = False
        arr = sitk.GetArrayViewFromImage(label)
        values = np.unique(arr)
        if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
            problems.append(f"{tag}: label {case.label.name} has non-integer values (e.g. {values[values != np.round(values)][:3].tolist()}); save it as an integer label map")
            ok = False
        else:
            declared = set(spec.labels)
            bad = [int(v) for v in values if int(v) not in declared]
            if bad:
                problems.append(
                    f"{tag}: label {case.label.name} contains value(s) {bad[:10]} not declared in labels {sorted(declared)}; "
                    "declare them in the manifest's \"labels\" or remap the label map"
                )
                ok = False
            elif case.role == "labeled" and values.max(initial=0) == 0:
                # True negatives (lesion data: scans without a lesion) are valid training cases.
                warnings.append(f"{tag}: label {case.label.name} is empty (all background); used as a case without "
                                "the structures (true negative)")
    return (images, label) if ok else None
