"""Damaged and edge-case files through the real CLI (``python -m lightunetr_core``): exit code, message,
and what is left on disk. Truncated and corrupt files are refused (SimpleITK alone would read several of
them, zero-filling what is missing); NaN/Inf voxels are refused with their count and place; a constant
image is accepted with a warning; an empty label is a true-negative case; negative labels are refused by
``evaluate`` as by ``train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from lightunetr_core.data.integrity import IncompleteImageError, check_complete

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
PATCH = (32, 32, 32)


def cli(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "lightunetr_core", *map(str, args), "--events", "json"], env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc


def error_message(events) -> str:
    return " ".join(e["message"] for e in events if e["event"] == "error")


def volume(seed=0, shape=(36, 40, 44), dtype=np.float32):
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray((rng.random(shape) * 100).astype(dtype))
    image.SetSpacing((1.0, 1.2, 1.5))
    return image


def write(image, path, compress=True):
    sitk.WriteImage(image, str(path), compress)
    return path


def truncate(path, keep=1 / 3):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def corrupt(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import torch

    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.data import IntensityNormalization, PreprocessingPlan
    from lightunetr_core.models import build_model

    torch.manual_seed(0)
    args = {"in_channels": 1, "num_classes": 2, "patch_size": list(PATCH)}
    card = ModelCard(name="random", description="random weights (test)", architecture="lightunetr",
                     architecture_args=args, patch_size=list(PATCH),
                     preprocessing=PreprocessingPlan(target_spacing=(2.0,) * 3,
                                                     normalization=[IntensityNormalization("zscore")]).to_dict(),
                     input_channels=["MR"], labels=default_labels(["background", "organ"]))
    return save_bundle(tmp_path_factory.mktemp("bundle") / "random", build_model("lightunetr", **args).eval(), card)


# ------------------------------------------------------------------ the check itself
@pytest.mark.parametrize("ending,compress", [(".nii.gz", True), (".nii", False), (".nrrd", True), (".nrrd", False),
                                             (".mha", True), (".mha", False)])
def test_truncated_files_are_detected(tmp_path, ending, compress):
    path = write(volume(), tmp_path / f"v{ending}", compress)
    check_complete(path)  # the intact file passes
    truncate(path)
    with pytest.raises(IncompleteImageError, match="truncated"):
        check_complete(path)


@pytest.mark.parametrize("ending,sitk_reads_it", [(".nii.gz", False), (".nrrd", True), (".mha", True)])
def test_corrupt_compressed_files_are_detected(tmp_path, ending, sitk_reads_it):
    path = corrupt(write(volume(), tmp_path / f"v{ending}"))
    if sitk_reads_it:
        sitk.ReadImage(str(path))  # why the check exists: SimpleITK reads it without an error
    with pytest.raises(IncompleteImageError, match="corrupt"):
        check_complete(path)


def test_detached_nrrd_data_is_checked(tmp_path):
    header = write(volume(), tmp_path / "v.nhdr", False)
    data = tmp_path / "v.raw"
    assert data.is_file(), list(tmp_path.iterdir())
    check_complete(header)
    truncate(data)
    with pytest.raises(IncompleteImageError, match="truncated"):
        check_complete(header)


# ------------------------------------------------------------------ segment
@pytest.mark.parametrize("make,expect", [
    (lambda d: truncate(write(volume(), d / "cut.nii.gz")), "truncated"),
    (lambda d: truncate(write(volume(), d / "cut.nii", False)), "truncated"),
    (lambda d: corrupt(write(volume(), d / "bad.nrrd")), "corrupt"),
    (lambda d: corrupt(write(volume(), d / "bad.mha")), "corrupt"),
], ids=["truncated-nii.gz", "truncated-nii", "corrupt-nrrd", "corrupt-mha"])
def test_segment_refuses_damaged_files_and_writes_nothing(tmp_path, bundle, make, expect):
    src = tmp_path / "in"
    src.mkdir()
    path = make(src)
    out = tmp_path / "out"
    code, events, proc = cli("segment", path, "-m", bundle, "-o", out, "--device", "cpu")
    assert code == 2, proc.stderr[-2000:]
    message = error_message(events)
    assert path.name in message and expect in message and "again" in message, message
    assert not out.exists() or not any(out.iterdir()), "an output was written for a damaged input"


def test_segment_refuses_nan_voxels_with_count_and_place(tmp_path, bundle):
    array = sitk.GetArrayFromImage(volume())
    array[3, 4, 5] = np.nan  # [z, y, x] → voxel (i, j, k) = (5, 4, 3)
    array[7, 8, 9] = np.inf
    image = sitk.GetImageFromArray(array)
    path = write(image, tmp_path / "nan.nrrd")
    out = tmp_path / "out"
    code, events, _ = cli("segment", path, "-m", bundle, "-o", out, "--device", "cpu")
    message = error_message(events)
    assert code == 2 and "2 voxel(s) are NaN or infinite" in message and "(5, 4, 3)" in message, message
    assert not out.exists() or not any(out.iterdir())


def test_segment_warns_about_a_constant_image(tmp_path, bundle):
    path = write(sitk.GetImageFromArray(np.full((36, 40, 44), 7, np.float32)), tmp_path / "flat.nii.gz")
    code, events, proc = cli("segment", path, "-m", bundle, "-o", tmp_path / "out", "--device", "cpu")
    assert code == 0, proc.stderr[-2000:]
    warnings = [e["message"] for e in events if e["event"] == "log" and e.get("level") == "warning"]
    assert any("constant" in w and "flat.nii.gz" in w for w in warnings), warnings
    assert (tmp_path / "out" / "flat_segmentation.nii.gz").is_file()


# ------------------------------------------------------------------ train
def _dataset(folder, n_labeled=2, n_unlabeled=2, empty=(), damage=None):
    """A small folder dataset (imagesTr/labelsTr/imagesUnlabeled) with a bright box to learn."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    (folder / "imagesUnlabeled").mkdir()
    for n in range(n_labeled + n_unlabeled):
        rng = np.random.default_rng(n)
        img = rng.normal(0, 1, (36, 40, 44)).astype(np.float32)
        lab = np.zeros(img.shape, np.uint8)
        if n not in empty:
            lab[8:20, 10:24, 12:28] = 1
        img[lab > 0] += 4
        image = sitk.GetImageFromArray(img)
        label = sitk.GetImageFromArray(lab)
        if n < n_labeled:
            write(image, folder / "imagesTr" / f"case{n}_0000.nii.gz")
            write(label, folder / "labelsTr" / f"case{n}.nii.gz")
        else:
            write(image, folder / "imagesUnlabeled" / f"case{n}_0000.nii.gz")
    if damage:
        truncate(folder / damage)
    return folder


def _train(data, run, *extra):
    return cli("train", "--data", data, "-o", run, "--recipe", "supervised", "--iterations", "1", "--patch-size",
               "32,32,32", "--batch-labeled", "2", "--batch-unlabeled", "2", "--val-every", "0", "--device", "cpu", "--threads", "1", *extra)


@pytest.mark.parametrize("damaged", ["imagesTr/case1_0000.nii.gz", "labelsTr/case0.nii.gz",
                                     "imagesUnlabeled/case2_0000.nii.gz"])
def test_train_refuses_truncated_cases_and_leaves_no_run_folder(tmp_path, damaged):
    data = _dataset(tmp_path / "data", damage=damaged)
    run = tmp_path / "runs" / "r1"
    code, events, proc = _train(data, run)
    message = error_message(events)
    assert code == 2 and os.path.basename(damaged) in message and "truncated" in message, message + proc.stderr[-1000:]
    assert not (tmp_path / "runs").exists(), "a run folder was left behind"


def test_train_accepts_an_empty_label_as_a_true_negative(tmp_path):
    data = _dataset(tmp_path / "data", empty=(1,))
    code, events, proc = _train(data, tmp_path / "run")
    assert code == 0, error_message(events) + proc.stderr[-2000:]
    warnings = [e["message"] for e in events if e["event"] == "log" and e.get("level") == "warning"]
    assert any("case1" in w and "empty" in w and "true negative" in w for w in warnings), warnings
    report = [e["message"] for e in events if e["event"] == "log" and "labelled case(s) with an empty label" in e["message"]]
    assert report and "1 labelled case(s) with an empty label" in report[0], report


def test_train_refuses_when_every_label_is_empty(tmp_path):
    data = _dataset(tmp_path / "data", empty=(0, 1))
    code, events, _ = _train(data, tmp_path / "runs" / "r")
    assert code == 2 and "every labelled case has an empty label" in error_message(events)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ evaluate
def test_evaluate_refuses_negative_labels_and_damaged_files(tmp_path):
    ref = sitk.GetImageFromArray(np.zeros((20, 20, 20), np.int16))
    arr = np.zeros((20, 20, 20), np.int16)
    arr[2:5, 2:5, 2:5] = -1
    pred = sitk.GetImageFromArray(arr)
    write(ref, tmp_path / "ref.nii.gz")
    write(pred, tmp_path / "pred.nii.gz")
    out = tmp_path / "metrics.json"
    code, events, _ = cli("evaluate", "--prediction", tmp_path / "pred.nii.gz", "--reference", tmp_path / "ref.nii.gz",
                          "--json", out)
    assert code == 2 and "negative label value(s) [-1]" in error_message(events), error_message(events)
    assert not out.exists()
    truncate(write(ref, tmp_path / "cut.nii.gz"))
    code, events, _ = cli("evaluate", "--prediction", tmp_path / "cut.nii.gz", "--reference", tmp_path / "ref.nii.gz",
                          "--json", out)
    assert code == 2 and "truncated" in error_message(events)
    assert not out.exists()
