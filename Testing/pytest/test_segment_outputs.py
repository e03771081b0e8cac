"""``lightunetr segment`` outputs beyond the label map, through the real CLI: per-structure statistics, the
review score of the uncertainty map, folders of images (nnU-Net channel naming) and DICOM SEG."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from lightunetr_core.inference.statistics import label_statistics, review_score

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
PATCH = (32, 32, 32)


def cli(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "lightunetr_core", *map(str, args), "--events", "json"], env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")], proc


def _bundle(folder, name="random", channels=("MR",), labels=("background", "left atrium", "Organ X")):
    import torch

    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.data import IntensityNormalization, PreprocessingPlan
    from lightunetr_core.models import build_model

    torch.manual_seed(0)
    args = {"in_channels": len(channels), "num_classes": len(labels), "patch_size": list(PATCH)}
    card = ModelCard(name=name, description="random weights (test)", architecture="lightunetr", architecture_args=args,
                     patch_size=list(PATCH), input_channels=list(channels), labels=default_labels(list(labels)),
                     preprocessing=PreprocessingPlan(target_spacing=(2.0,) * 3, normalization=[
                         IntensityNormalization("zscore") for _ in channels]).to_dict())
    return save_bundle(folder / name, build_model("lightunetr", **args).eval(), card)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("b"))


def _image(seed=0, shape=(30, 34, 38), spacing=(1.5, 1.2, 2.0)):
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray((rng.random(shape) * 100).astype(np.float32))
    image.SetSpacing(spacing)
    return image


def test_label_statistics_and_review_score_by_hand():
    lab = np.zeros((10, 12, 14), np.uint8)
    lab[2:5, 3:6, 4:8] = 1  # 3*3*4 = 36 voxels
    labels = sitk.GetImageFromArray(lab)
    labels.SetSpacing((2.0, 1.0, 0.5))  # 1 ml per 1000 voxels of 1 mm³: here 1 voxel = 1 mm³
    rows = label_statistics(labels, [{"value": 0, "name": "bg"}, {"value": 1, "name": "A"}, {"value": 2, "name": "B"}])
    assert rows == [{"value": 1, "name": "A", "voxels": 36, "volume_ml": 0.036},
                    {"value": 2, "name": "B", "voxels": 0, "volume_ml": 0.0}]
    ent = np.full(lab.shape, 0.1, np.float32)
    ent[0, 0, 0] = 1.0  # far from the structure: does not count
    ent[5, 4, 5] = 0.9  # one slice (0.5 mm) above the structure: in the band
    uncertainty = sitk.GetImageFromArray(ent)
    uncertainty.CopyInformation(labels)
    score = review_score(labels, uncertainty, margin_mm=1.0)
    distance_band = score["band_voxels"]
    assert distance_band > 36 and score["foreground_ml"] == pytest.approx(0.036)
    assert score["score"] == pytest.approx((0.1 * (distance_band - 1) + 0.9) / distance_band)
    assert score["mean_entropy"] == pytest.approx(float(ent.mean()))
    empty = review_score(sitk.GetImageFromArray(np.zeros_like(lab)), uncertainty)
    assert empty["score"] == pytest.approx(float(ent.mean())) and empty["foreground_ml"] == 0.0


def test_statistics_file_and_review_event(tmp_path, bundle):
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(_image(), str(path))
    code, events, proc = cli("segment", path, "-m", bundle, "-o", tmp_path / "out", "--device", "cpu", "--statistics",
                             "--uncertainty")
    assert code == 0, proc.stderr[-2000:]
    labels = sitk.ReadImage(str(tmp_path / "out" / "case_segmentation.nii.gz"))
    with open(tmp_path / "out" / "case_statistics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    arr = sitk.GetArrayFromImage(labels)
    voxel_ml = 1.5 * 1.2 * 2.0 / 1000
    assert [r["name"] for r in rows] == ["left atrium", "Organ X"]
    for r in rows:
        n = int(np.count_nonzero(arr == int(r["value"])))
        assert int(r["voxels"]) == n and float(r["volume_ml"]) == pytest.approx(n * voxel_ml, abs=1e-4)
    review = [e for e in events if e["event"] == "review"]
    unc = sitk.ReadImage(str(tmp_path / "out" / "case_uncertainty.nii.gz"))
    assert len(review) == 1 and review[0]["score"] == pytest.approx(review_score(labels, unc)["score"], rel=1e-5)
    assert any(e["event"] == "output" and e["kind"] == "statistics" for e in events)


def test_folder_of_images_with_nnunet_channels(tmp_path):
    two = _bundle(tmp_path, "two", channels=("T1", "T2"), labels=("background", "a"))
    folder = tmp_path / "in"
    folder.mkdir()
    for case in ("p1", "p2"):
        for channel in (0, 1):
            sitk.WriteImage(_image(seed=channel), str(folder / f"{case}_{channel:04d}.nii.gz"))
    code, events, proc = cli("segment", folder, "-m", two, "-o", tmp_path / "out", "--device", "cpu")
    assert code == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p1_segmentation.nii.gz", "p2_segmentation.nii.gz"]
    (folder / "p2_0001.nii.gz").unlink()
    code, events, _ = cli("segment", folder, "-m", two, "-o", tmp_path / "out2", "--device", "cpu")
    message = " ".join(e["message"] for e in events if e["event"] == "error")
    assert code == 2 and "'p2'" in message and "channel file(s) [0]" in message, message
    assert not (tmp_path / "out2").exists()


def _dicom_series(folder, array_zyx, spacing=(0.9, 0.8, 2.5)):
    folder.mkdir(parents=True)
    volume = sitk.GetImageFromArray(array_zyx.astype(np.int16))
    volume.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study, series = "1.2.826.0.1.3680043.2.1125.1.51", "1.2.826.0.1.3680043.2.1125.1.52"
    for k in range(volume.GetDepth()):
        s = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {"0008|0060": "MR", "0020|000d": study, "0020|000e": series, "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(f"{v:.6f}" for v in position), "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
                           "0008|0018": f"{series}.{k + 1}", "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
                           "0010|0010": "Test^Patient", "0010|0020": "T1",
                           "0020|0052": "1.2.826.0.1.3680043.2.1125.1.53"}.items():
            s.SetMetaData(tag, value)
        # files named against their stacking order: the SEG must follow the series order, not the names
        writer.SetFileName(str(folder / f"img_{(7 * k) % volume.GetDepth():03d}_{k}.dcm"))
        writer.Execute(s)


def test_dicom_seg_round_trip_is_voxel_exact(tmp_path, bundle):
    pytest.importorskip("highdicom")
    from lightunetr_core.data.dicomseg import read_dicom_seg_labels

    rng = np.random.default_rng(3)
    series = tmp_path / "series"
    _dicom_series(series, (rng.random((12, 34, 30)) * 1000).astype(np.int16))
    out = tmp_path / "out"
    code, events, proc = cli("segment", series, "-m", bundle, "-o", out, "--device", "cpu", "--format", "dicom-seg")
    assert code == 0, proc.stderr[-3000:] + str([e for e in events if e["event"] == "error"])
    code2, _, proc2 = cli("segment", series, "-m", bundle, "-o", tmp_path / "ref", "--device", "cpu")
    assert code2 == 0, proc2.stderr[-2000:]
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ref" / "series_segmentation.nii.gz")))
    assert len(np.unique(reference)) >= 2, "the random model must label something for the check to mean anything"
    got, names = read_dicom_seg_labels(out / "series_segmentation.dcm", series)
    assert names == ["left atrium", "Organ X"]
    np.testing.assert_array_equal(got, reference)
    import highdicom as hd

    seg = hd.seg.segread(str(out / "series_segmentation.dcm"))
    first = seg.SegmentSequence[0]
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "82471001"  # SNOMED CT left atrium
    assert first.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "99LIGHTUNETR"
    assert first.SegmentAlgorithmType == "AUTOMATIC"


def test_dicom_seg_of_a_series_without_frame_of_reference_is_a_clear_bad_input(tmp_path, bundle):
    pytest.importorskip("highdicom")
    series = tmp_path / "series"
    _dicom_series(series, np.zeros((6, 20, 20), np.int16) + 5)
    for f in series.iterdir():  # an anonymiser that dropped FrameOfReferenceUID
        import pydicom

        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    code, events, _ = cli("segment", series, "-m", bundle, "-o", tmp_path / "out", "--device", "cpu", "--format",
                          "dicom-seg")
    message = " ".join(e["message"] for e in events if e["event"] == "error")
    assert code == 2 and "Frame Of Reference" in message and "another --format" in message, message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dicom_seg_needs_a_dicom_input(tmp_path, bundle):
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(_image(), str(path))
    code, events, _ = cli("segment", path, "-m", bundle, "-o", tmp_path / "out", "--device", "cpu", "--format",
                          "dicom-seg")
    message = " ".join(e["message"] for e in events if e["event"] == "error")
    assert code == 2 and "DICOM series folder" in message
