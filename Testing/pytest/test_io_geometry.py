"""Image reading/writing checks, RAS reorientation, resampling and the exact way back."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lightunetr_core.data import (
    Geometry,
    GeometryMismatchError,
    ImageReadError,
    IntensityNormalization,
    OutputExistsError,
    PreprocessingPlan,
    Reorientation,
    image_to_array,
    inspect_image,
    preprocess_case,
    read_image,
    reorient_to_ras,
    write_image,
    write_segmentation_nrrd,
)


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def make_image(size=(12, 10, 8), spacing=(1.0, 1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0), seed=0):
    rng = np.random.default_rng(seed)
    img = sitk.GetImageFromArray(rng.random(size[::-1]).astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    return img


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


# --- reading: clear errors naming file, problem and fix ------------------------------------------------

def test_read_roundtrip_formats(tmp_path):
    img = make_image(spacing=(0.8, 1.2, 2.5), direction=rotation("z", 30) @ np.diag([1, -1, 1]), origin=(5, -3, 7))
    for name in ("a.nii.gz", "a.nii", "a.nrrd", "a.mha"):
        write_image(img, tmp_path / name)
        back = read_image(tmp_path / name)
        assert back.GetSize() == img.GetSize()
        np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-5)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
        assert inspect_image(tmp_path / name)["size"] == img.GetSize()
    assert no_temp_files(tmp_path)


def test_read_dicom_series_folder(tmp_path):
    img = sitk.Cast(make_image(size=(16, 14, 5), spacing=(0.7, 0.7, 2.0)) * 1000, sitk.sitkInt16)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.12345"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        sl.SetMetaData("0020|000e", uid)  # series instance UID
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    back = read_image(folder)
    assert back.GetSize() == img.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), (0.7, 0.7, 2.0), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


@pytest.mark.parametrize("case", ["2d", "4d", "single_slice", "nan", "inf", "vector", "garbage", "missing",
                                  "zero_spacing", "empty_folder"])
def test_read_rejects_bad_inputs(tmp_path, case):
    path = tmp_path / "bad.nii.gz"
    expected = {"2d": "2-D", "4d": "4-D", "single_slice": "length 1", "nan": "NaN", "inf": "NaN or infinite",
                "vector": "components", "garbage": "cannot read", "missing": "not found",
                "zero_spacing": "spacing", "empty_folder": "no DICOM"}[case]
    if case == "2d":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(path))
    elif case == "4d":
        volume = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
        sitk.WriteImage(sitk.JoinSeries([volume] * 3), str(path))
    elif case == "single_slice":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 8, 8), np.float32)), str(path))
    elif case in ("nan", "inf"):
        path = tmp_path / "bad.mha"  # (ITK's NIfTI writer turns NaN into 0)
        a = np.zeros((4, 5, 6), np.float32)
        a[1, 2, 3] = np.nan if case == "nan" else np.inf
        sitk.WriteImage(sitk.GetImageFromArray(a), str(path))
    elif case == "vector":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True), str(path))
    elif case == "garbage":
        path.write_bytes(gzip.compress(b"this is not an image" * 10))
    elif case == "zero_spacing":
        path = tmp_path / "bad.nhdr"
        (tmp_path / "bad.raw").write_bytes(np.zeros(4 * 5 * 6, np.uint8).tobytes())
        path.write_text("NRRD0004\ntype: uchar\ndimension: 3\nspace: left-posterior-superior\nsizes: 6 5 4\n"
                        "space directions: (1,0,0) (0,0,0) (0,0,1)\nkinds: domain domain domain\n"
                        "endian: little\nencoding: raw\nspace origin: (0,0,0)\ndata file: bad.raw\n")
    elif case == "empty_folder":
        path = tmp_path / "dicom"
        path.mkdir()
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message
    if case == "zero_spacing":
        assert "spacing" in message or "direction" in message
    else:
        assert expected in message
    if case in ("2d", "4d", "nan", "zero_spacing"):
        # The fix is named, not just the problem.
        assert any(word in message.lower() for word in ("pass", "extract", "replace", "fix"))


def test_write_image_refuses_existing_and_is_atomic(tmp_path):
    img = make_image()
    path = tmp_path / "out" / "x.nii.gz"
    write_image(img, path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_image(make_image(seed=1), path)
    assert path.read_bytes() == before
    write_image(make_image(seed=1), path, overwrite=True)
    assert path.read_bytes() != before
    with pytest.raises(ValueError, match="mha"):
        write_image(img, tmp_path / "x.mhd")
    assert no_temp_files(path.parent)


def test_write_segmentation_nrrd_has_slicer_fields(tmp_path):
    labels = np.zeros((10, 12, 14), np.uint8)  # [x, y, z]
    labels[2:5, 3:7, 4:9] = 1
    labels[6:8, 1:3, 10:12] = 2
    img = sitk.GetImageFromArray(labels.transpose(2, 1, 0))
    img.SetSpacing((0.5, 0.6, 0.7))
    spleen = ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
              "~SCT^78961009^Spleen~^^~Anatomic codes - DICOM master list~^^~^^")
    entries = [{"value": 0, "name": "background", "color": [0, 0, 0]},
               {"value": 1, "name": "left atrium", "color": [1.0, 0.5, 0.25]},
               {"value": 2, "name": "spleen", "color": [0.1, 0.2, 0.3], "terminology": spleen},
               {"value": 3, "name": "absent", "color": [0.5, 0.5, 0.5]}]
    path = write_segmentation_nrrd(img, tmp_path / "case.seg.nrrd", entries)
    back = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert back.GetSpacing() == pytest.approx((0.5, 0.6, 0.7))
    meta = {k: back.GetMetaData(k) for k in back.GetMetaDataKeys()}
    assert meta["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert meta["Segment0_Name"] == "left atrium" and meta["Segment0_LabelValue"] == "1"
    assert meta["Segment0_Color"] == "1 0.5 0.25"
    assert meta["Segment0_Extent"] == "2 4 3 6 4 8"  # i0 i1 j0 j1 k0 k1
    assert meta["Segment1_Name"] == "spleen" and "78961009" in meta["Segment1_Tags"]
    assert meta["Segment1_Layer"] == "0" and meta["Segment1_ID"] == "Segment_2"
    assert meta["Segment2_Extent"] == "0 -1 0 -1 0 -1"  # empty segment
    assert "TerminologyEntry:" in meta["Segment0_Tags"]
    assert "Segment3_Name" not in meta  # background is not a segment
    with pytest.raises(OutputExistsError):
        write_segmentation_nrrd(img, path, entries)


# --- orientation --------------------------------------------------------------------------------------

DIRECTIONS = {
    "lps_identity": np.eye(3),
    "ras": np.diag([-1.0, -1.0, 1.0]),
    "sagittal_permuted": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float),
    "left_handed": np.diag([1.0, -1.0, -1.0]) @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float),
    "oblique": rotation("x", 25) @ rotation("z", -35),
    "oblique_left_handed": rotation("y", 20) @ np.diag([1.0, 1.0, -1.0]),
}


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_reorientation_keeps_every_voxel_in_place(name):
    img = make_image(size=(7, 6, 5), spacing=(0.9, 1.7, 3.1), direction=DIRECTIONS[name], origin=(10, -20, 30))
    out, reorientation = reorient_to_ras(img)
    stored, canon = image_to_array(img), image_to_array(out)
    # Every voxel value sits at the same physical point.
    for index in np.ndindex(*img.GetSize()):
        j = out.TransformPhysicalPointToIndex(img.TransformIndexToPhysicalPoint(index))
        assert canon[j] == stored[index]
    # Axis j of the canonical image points most nearly to R, A, S (LPS: -x, -y, +z).
    d_ras = np.diag([-1, -1, 1]) @ np.asarray(out.GetDirection()).reshape(3, 3)
    assert all(int(np.argmax(np.abs(d_ras[:, j]))) == j and d_ras[j, j] > 0 for j in range(3))
    np.testing.assert_array_equal(reorientation.invert(canon), stored)
    np.testing.assert_array_equal(reorientation.invert(reorientation.apply(canon[None], True), True), canon[None])


@pytest.mark.parametrize("name", ["lps_identity", "ras", "sagittal_permuted", "left_handed"])
def test_reorientation_agrees_with_itk_for_axis_aligned_images(name):
    """ITK's DICOMOrient(…, "RAS") is an independent implementation for axis-aligned directions."""
    img = make_image(size=(7, 6, 5), spacing=(0.9, 1.7, 3.1), direction=DIRECTIONS[name], origin=(10, -20, 30))
    ours, _ = reorient_to_ras(img)
    itk = sitk.DICOMOrient(img, "RAS")
    assert ours.GetSize() == itk.GetSize() and ours.GetSpacing() == itk.GetSpacing()
    np.testing.assert_allclose(ours.GetDirection(), itk.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(ours.GetOrigin(), itk.GetOrigin(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(itk))


def test_reorientation_of_lps_identity_flips_x_and_y():
    assert Reorientation.for_direction(np.eye(3).ravel()) == Reorientation((0, 1, 2), (True, True, False))
    assert Reorientation.for_direction(np.diag([-1, -1, 1.0]).ravel()).is_identity


# --- preprocessing and the way back --------------------------------------------------------------------

def blob_image(size, spacing, direction, origin, centre=(4.0, -6.0, 8.0), radius=9.0):
    """A smooth physical object sampled on the given grid (value = smooth function of the LPS point)."""
    img = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    img.SetOrigin(origin)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1).reshape(-1, 3)
    d = np.asarray(direction, float).reshape(3, 3)
    points = np.asarray(origin) + (idx * np.asarray(spacing)) @ d.T
    r = np.linalg.norm((points - np.asarray(centre)) * np.array([1.0, 1.3, 0.8]), axis=1)
    values = (np.clip(radius - r, -3, 3) + 3) * 50 + points[:, 0] * 0.5  # blob + gradient along LPS x
    arr = values.reshape(size).astype(np.float32)
    out = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    out.CopyInformation(img)
    return out


def test_same_physical_image_in_any_storage_gives_same_model_input():
    base = blob_image((24, 20, 12), (1.1, 1.4, 2.5), rotation("z", 15) @ rotation("x", -10), (-10.0, -15.0, -12.0))
    plan = PreprocessingPlan(target_spacing=(1.5, 1.5, 1.5), normalization=[IntensityNormalization("zscore")])
    reference = preprocess_case([base], plan)
    variants = [sitk.DICOMOrient(base, code) for code in ("LPS", "RAS", "SAL", "AIR", "PSR", "RPS")]
    assert len({np.round(np.linalg.det(np.reshape(v.GetDirection(), (3, 3)))) for v in variants}) == 2  # both handednesses
    for variant in variants:
        case = preprocess_case([variant], plan)
        assert case.model.size == reference.model.size
        np.testing.assert_allclose(case.model.origin, reference.model.origin, atol=1e-6)
        np.testing.assert_allclose(case.image, reference.image, atol=1e-4)


def test_to_original_grid_is_exact_without_resampling_and_close_with():
    direction = rotation("y", 12) @ np.diag([1.0, -1.0, 1.0])  # oblique, left-handed
    img = blob_image((26, 22, 14), (1.0, 1.2, 2.0), direction, (0.0, 0.0, 0.0), centre=(12, -10, 12))
    label = sitk.Cast(img > 300, sitk.sitkUInt8)
    truth = image_to_array(label)
    assert 50 < truth.sum() < truth.size / 2
    native = preprocess_case([img], PreprocessingPlan(target_spacing=None), label=label)
    assert not native.resampled
    np.testing.assert_array_equal(native.to_original_grid(native.label, is_label=True), truth)
    onehot = np.stack([native.label == 0, native.label == 1]).astype(np.float32)
    np.testing.assert_array_equal(native.to_original_grid(onehot).argmax(0), truth)

    coarse = preprocess_case([img], PreprocessingPlan(target_spacing=(1.5, 1.5, 1.5)), label=label)
    assert coarse.resampled and coarse.image.shape[0] == 1 and coarse.label.dtype == np.uint8
    back = coarse.to_original_grid(np.stack([coarse.label == 0, coarse.label == 1]).astype(np.float32)).argmax(0)
    assert back.shape == truth.shape
    dice = 2 * np.sum((back == 1) & (truth == 1)) / (back.sum() + truth.sum())
    assert dice > 0.9
    rng = np.random.default_rng(1)
    probs = rng.random((3,) + coarse.model.size).astype(np.float32)
    np.testing.assert_array_equal(coarse.argmax_on_original_grid(probs), coarse.to_original_grid(probs).argmax(0))
    image = coarse.labels_to_image(back)
    assert Geometry.of(image) == Geometry.of(img)


def test_preprocess_rejects_mismatched_channels_and_label():
    a = make_image(size=(8, 8, 8))
    b = make_image(size=(8, 8, 8), spacing=(1.0, 1.0, 2.0))
    plan2 = PreprocessingPlan(target_spacing=None, normalization=[IntensityNormalization("zscore")] * 2)
    with pytest.raises(GeometryMismatchError) as info:
        preprocess_case([a, b], plan2, channel_names=["T1", "FLAIR"])
    assert "FLAIR" in str(info.value) and "T1" in str(info.value) and "Resample" in str(info.value)
    with pytest.raises(ValueError, match="2 channel"):
        preprocess_case([a], plan2)
    with pytest.raises(ValueError, match="0..255"):
        preprocess_case([a], PreprocessingPlan(target_spacing=None), label=sitk.Cast(a * 1000, sitk.sitkInt16))
    with pytest.raises(GeometryMismatchError, match="label map"):
        preprocess_case([a], PreprocessingPlan(target_spacing=None), label=sitk.Cast(b > 0.5, sitk.sitkUInt8))


def test_normalizations():
    x = np.array([[[0.0, 0.0], [100.0, 300.0]], [[-500.0, 50.0], [0.0, 1000.0]]], np.float32)
    z = IntensityNormalization("zscore")(x)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4
    nz = IntensityNormalization("zscore", nonzero=True, zero_background=True)(x)
    assert np.all(nz[x == 0] == 0) and abs(nz[x != 0].mean()) < 1e-5
    ct = IntensityNormalization("ct", window=(-125, 275))(x)
    assert ct.min() == 0.0 and ct.max() == 1.0 and ct[0, 0, 0] == pytest.approx(125 / 400)
    mm = IntensityNormalization("minmax")(x)
    assert mm.min() == 0.0 and mm.max() == 1.0
    assert np.array_equal(IntensityNormalization("none")(x), x)
    plan = PreprocessingPlan(target_spacing=(0.625, 0.625, 0.625),
                             normalization=[IntensityNormalization("ct", window=(-100, 200)), IntensityNormalization("zscore", nonzero=True)])
    assert PreprocessingPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ValueError, match="unknown normalization"):
        IntensityNormalization("bogus")
    with pytest.raises(ValueError, match="target_spacing"):
        PreprocessingPlan(target_spacing=(1.0, 0.0, 1.0))


_SLICER_LOAD_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from slicer_bootstrap import bootstrap
env = bootstrap()
import slicer, vtk
node = slicer.modules.segmentations.logic().LoadSegmentationFromFile(sys.argv[1], False)
seg = node.GetSegmentation()
out = []
for i in range(seg.GetNumberOfSegments()):
    s = seg.GetNthSegment(i)
    m = vtk.vtkMatrix4x4()
    s.GetRepresentation("Binary labelmap").GetImageToWorldMatrix(m)
    arr = slicer.util.arrayFromSegmentInternalBinaryLabelmap(node, seg.GetNthSegmentID(i))
    out.append({"name": s.GetName(), "color": list(s.GetColor()), "value": s.GetLabelValue(),
                "terminology": s.GetTerminology(), "voxels": int((arr == s.GetLabelValue()).sum()),
                "ijk_to_ras": [[m.GetElement(r, c) for c in range(4)] for r in range(3)]})
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slicer
def test_seg_nrrd_loads_in_slicer_core_with_names_colours_and_geometry(tmp_path):
    """Real slicer-core (Slicer's C++ segmentation reader) in a clean subprocess."""
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("vtk") is None or importlib.util.find_spec("slicer") is None:
        pytest.skip("slicer-core is not installed (pip install 'lightunetr-core[test]')")
    labels = np.zeros((14, 12, 10), np.uint8)  # [z, y, x]
    labels[2:5, 3:7, 4:9] = 1
    labels[6:8, 1:3, 2:4] = 2
    img = sitk.GetImageFromArray(labels)
    img.SetSpacing((0.5, 0.6, 0.7))
    img.SetOrigin((10.0, 20.0, 30.0))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    spleen = ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
              "~SCT^78961009^Spleen~^^~Anatomic codes - DICOM master list~^^~^^")
    path = write_segmentation_nrrd(img, tmp_path / "case.seg.nrrd", [
        {"value": 0, "name": "background", "color": [0, 0, 0]},
        {"value": 1, "name": "left atrium", "color": [1.0, 0.5, 0.25]},
        {"value": 2, "name": "spleen", "color": [0.1, 0.2, 0.3], "terminology": spleen}])
    bootstrap_dir = Path(__file__).resolve().parent / "slicer_scene"
    proc = subprocess.run([sys.executable, "-c", _SLICER_LOAD_SCRIPT, str(path), str(bootstrap_dir)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    segments = json.loads(lines[0][len("RESULT"):])
    assert [s["name"] for s in segments] == ["left atrium", "spleen"]
    assert segments[0]["color"] == pytest.approx([1.0, 0.5, 0.25]) and segments[1]["value"] == 2
    assert "78961009" in segments[1]["terminology"]
    assert [s["voxels"] for s in segments] == [int((labels == 1).sum()), int((labels == 2).sum())]
    # Slicer's IJK→RAS = diag(-1, -1, 1) · [D · diag(spacing) | origin] (LPS → RAS).
    d = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    expected = np.diag([-1.0, -1.0, 1.0]) @ np.column_stack([d, img.GetOrigin()])
    np.testing.assert_allclose(segments[0]["ijk_to_ras"], expected, atol=1e-6)
