"""End-to-end segmentation: physical consistency across storage orders and grids, output grid = input
grid, options (ROI, probabilities, uncertainty, largest component, small volumes), bad inputs, and the
``lightunetr segment`` CLI in a real subprocess with JSON events.

The model is a tiny Light-UNETR trained for a few steps to segment bright blobs, so its output is a
known function of the image (the blob) and can be compared with the truth in physical space.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lightunetr_core.bundle import ModelCard, default_labels, load_bundle, save_bundle
from lightunetr_core.data import Geometry, IntensityNormalization, PreprocessingPlan, image_to_array, read_image
from lightunetr_core.data.io import write_image
from lightunetr_core.inference import (
    InferenceInputError,
    count_windows,
    keep_largest_components,
    segment_image,
    select_device,
)
from lightunetr_core.jobs import CancelToken, JobCancelled

PATCH = (32, 32, 32)
SPACING = 2.0  # model space, mm
CENTRE = np.array([6.0, -8.0, 4.0])  # LPS mm, off-centre so that flips would show
SEMI_AXES = np.array([15.0, 11.0, 9.0])
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train_blob_model(steps: int = 30) -> torch.nn.Module:
    """Tiny Light-UNETR trained on random bright blobs (label = inside the blob)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = LightUNETR_tiny()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in PATCH], indexing="ij"))

    def sample():
        mask = np.zeros(PATCH, bool)
        soft = np.zeros(PATCH, np.float32)
        for _ in range(2):
            c, r = rng.uniform(4, 28, 3), rng.uniform(3.5, 9)
            d = np.sqrt(((grid - c[:, None, None, None]) ** 2).sum(0))
            mask |= d < r
            soft = np.maximum(soft, np.clip(r - d + 0.5, 0, 1))
        x = soft * 180 + 20 + rng.normal(size=PATCH) * 5
        return ((x - x.mean()) / x.std()).astype(np.float32), mask.astype(np.int64)

    model.train()
    for _ in range(steps):
        batch = [sample() for _ in range(2)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1] for b in batch]))
        logits = model(x)
        p = logits.softmax(1)[:, 1]
        soft_dice = 1 - 2 * (p * y).sum() / (p.sum() + y.sum() + 1)
        loss = torch.nn.functional.cross_entropy(logits, y) + soft_dice
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


TINY_ARGS = {"in_channels": 1, "num_classes": 2, "patch_size": list(PATCH), "channels": [18, 24, 36, 48],
             "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "dropout": 0.0}


def LightUNETR_tiny():
    from lightunetr_core.models import build_model

    return build_model("lightunetr", **TINY_ARGS)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    torch.set_num_threads(1)
    model = _train_blob_model()
    card = ModelCard(
        name="blob", description="bright blobs (test)", architecture="lightunetr", architecture_args=TINY_ARGS,
        patch_size=list(PATCH),
        preprocessing=PreprocessingPlan(target_spacing=(SPACING,) * 3, normalization=[IntensityNormalization("zscore")]).to_dict(),
        input_channels=["MR"], labels=default_labels(["background", "blob"]),
    )
    return save_bundle(tmp_path_factory.mktemp("bundle") / "blob", model, card)


@pytest.fixture(scope="module")
def bundle(bundle_path):
    return load_bundle(bundle_path)


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def physical_points(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel, shape (X, Y, Z, 3)."""
    g = Geometry.of(image)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in g.size], indexing="ij"), -1).astype(float)
    return np.asarray(g.origin) + (idx * np.asarray(g.spacing)) @ g.direction_matrix.T


def inside(points: np.ndarray) -> np.ndarray:
    return (((points - CENTRE) / SEMI_AXES) ** 2).sum(-1) < 1.0


def blob_volume(size, spacing, direction, seed=0) -> sitk.Image:
    """The same physical scene (a bright ellipsoid around CENTRE) sampled on the given grid."""
    direction = np.asarray(direction, float)
    centre_index = (np.asarray(size) - 1) / 2
    # The object is far from the centre of the field of view, so a flipped or shifted result cannot match.
    origin = CENTRE + np.array([-9.0, 8.0, -6.0]) - direction @ (centre_index * np.asarray(spacing))
    image = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection(tuple(direction.ravel()))
    image.SetOrigin(tuple(origin))
    rng = np.random.default_rng(seed)
    values = np.where(inside(physical_points(image)), 200.0, 20.0) + rng.normal(size=size) * 5
    out = sitk.GetImageFromArray(values.astype(np.float32).transpose(2, 1, 0))
    out.CopyInformation(image)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.sum(a & b)) / max(1, int(a.sum() + b.sum()))


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()


BASE_DIRECTION = rotation("z", 20) @ rotation("x", -12)  # oblique, right-handed


@pytest.fixture(scope="module")
def base_image():
    return blob_volume((50, 40, 24), (1.6, 1.9, 2.7), BASE_DIRECTION)


@pytest.fixture(scope="module")
def base_result(bundle, base_image):
    return segment_image(bundle, base_image, return_probabilities=True, return_uncertainty=True)


# --- Python API ------------------------------------------------------------------------------------------

def test_base_segmentation_matches_the_physical_object(base_image, base_result):
    assert_same_grid(base_result.labels, base_image)
    labels = image_to_array(base_result.labels)
    truth = inside(physical_points(base_image))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    assert dice(labels == 1, truth) > 0.7


@pytest.mark.parametrize("code", ["LPS", "RAS", "SAL", "PSR", "RPS", "ILA"])
def test_same_physical_image_in_other_storage_gives_same_segmentation(bundle, base_image, base_result, code):
    variant = sitk.DICOMOrient(base_image, code)  # permutation/flip of the voxels, same physical image
    det = np.linalg.det(np.reshape(variant.GetDirection(), (3, 3)))
    result = segment_image(bundle, variant)
    assert_same_grid(result.labels, variant)
    base_code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(base_image.GetDirection())
    back = sitk.DICOMOrient(result.labels, base_code)
    np.testing.assert_allclose(back.GetOrigin(), base_image.GetOrigin(), atol=1e-6)
    agreement = np.mean(image_to_array(back) == image_to_array(base_result.labels))
    assert agreement > 0.999, (code, det, agreement)


@pytest.mark.parametrize("name", ["axial_iso", "sagittal_left_handed", "oblique_anisotropic"])
def test_other_grids_of_the_same_scene_segment_the_same_object(bundle, name):
    size, spacing, direction = {
        "axial_iso": ((40, 36, 32), (1.5, 1.5, 1.5), np.diag([-1.0, -1.0, 1.0])),
        "sagittal_left_handed": ((28, 44, 40), (3.0, 1.3, 1.4), np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0.0]]) @ np.diag([1.0, -1.0, 1.0])),
        "oblique_anisotropic": ((44, 60, 20), (1.7, 1.2, 3.4), rotation("y", 30) @ rotation("z", -25) @ np.diag([1.0, 1.0, -1.0])),
    }[name]
    image = blob_volume(size, spacing, direction, seed=3)
    result = segment_image(bundle, image, overlap=0.25, blend="constant")
    assert_same_grid(result.labels, image)
    truth = inside(physical_points(image))
    assert dice(image_to_array(result.labels) == 1, truth) > 0.7


def test_probabilities_uncertainty_and_tta(bundle, base_image, base_result):
    probs = image_to_array(base_result.probabilities)
    assert probs.shape == base_image.GetSize() + (2,) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(-1), image_to_array(base_result.labels))
    unc = image_to_array(base_result.uncertainty)
    assert unc.min() >= 0 and unc.max() <= 1 + 1e-6
    labels = image_to_array(base_result.labels)
    p = np.clip(probs, 1e-12, 1)
    np.testing.assert_allclose(unc, -(p * np.log(p)).sum(-1) / np.log(2), atol=1e-4)  # normalised entropy
    assert_same_grid(base_result.probabilities, base_image)
    tta = segment_image(bundle, base_image, tta_flips=True)
    assert dice(image_to_array(tta.labels) == 1, labels == 1) > 0.8
    assert dice(image_to_array(tta.labels) == 1, inside(physical_points(base_image))) > 0.7


def test_roi_limits_the_segmentation(bundle, base_image, base_result):
    size = np.array(base_image.GetSize())
    lo = base_image.TransformIndexToPhysicalPoint([0, 0, 0])
    hi = base_image.TransformIndexToPhysicalPoint([int(s) for s in size // 2 + 6])
    result = segment_image(bundle, base_image, roi=list(lo) + list(hi), return_probabilities=True)
    assert_same_grid(result.labels, base_image)
    labels = image_to_array(result.labels)
    g = Geometry.of(base_image)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in g.size], indexing="ij"), -1)
    box_lo, box_hi = np.minimum(lo, hi), np.maximum(lo, hi)
    centres = physical_points(base_image)
    # Voxels whose centre is outside the box stay background.
    outside = np.any((centres < box_lo - 1e-6) | (centres > box_hi + 1e-6), axis=-1)
    assert outside.any() and not labels[outside].any()
    assert labels.sum() > 0 and labels.sum() < image_to_array(base_result.labels).sum()
    assert np.all(image_to_array(result.probabilities)[outside][:, 0] == 1.0)
    # Without probabilities the labels come from the class-by-class path: same result.
    plain = segment_image(bundle, base_image, roi=list(lo) + list(hi), largest_component=True)
    plain_labels = image_to_array(plain.labels)
    assert np.all(plain_labels <= labels) and plain_labels.sum() > 0.9 * labels.sum()
    from scipy import ndimage

    assert ndimage.label(plain_labels, structure=np.ones((3, 3, 3)))[1] == 1
    with pytest.raises(InferenceInputError, match="does not overlap"):
        segment_image(bundle, base_image, roi=[500, 500, 500, 600, 600, 600])
    del idx


def test_volume_smaller_than_patch_is_padded(bundle):
    image = blob_volume((14, 12, 9), (2.5, 2.5, 3.0), np.eye(3))
    result = segment_image(bundle, image, device="cpu")
    assert_same_grid(result.labels, image)
    assert count_windows((14, 12, 11), PATCH, 0.5) == 1


def test_largest_component_per_class():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[1:6, 1:6, 1:6] = 1
    labels[10:12, 10:12, 10:12] = 1  # small island of class 1
    labels[14:19, 1:4, 1:4] = 2
    labels[1:2, 18:19, 18:19] = 2  # single-voxel island of class 2
    out = keep_largest_components(labels)
    assert out[10, 10, 10] == 0 and out[1, 18, 18] == 0
    assert (out == 1).sum() == 125 and (out == 2).sum() == 45


def test_bad_inputs_and_cancel(bundle, base_image, tmp_path):
    with pytest.raises(InferenceInputError, match="needs 1 input image"):
        segment_image(bundle, [base_image, base_image])
    flag = tmp_path / "cancel"
    flag.touch()
    with pytest.raises(JobCancelled):
        segment_image(bundle, base_image, cancel=CancelToken(flag))
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


# --- CLI in a real subprocess ------------------------------------------------------------------------------

def run_cli(*args: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run([sys.executable, "-m", "lightunetr_core", "segment", *args, "--events", "json"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]  # every line is JSON
    return proc.returncode, events, proc.stderr


def run_cli_here(capsys, *args: str) -> tuple[int, list[dict]]:
    """The same CLI code in this process (torch and MONAI already imported: fast)."""
    import signal

    from lightunetr_core.cli import main

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    capsys.readouterr()
    try:
        rc = main(["segment", *args, "--events", "json"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_cli_matches_python_api_and_writes_seg_nrrd(bundle, bundle_path, base_image, tmp_path):
    first = tmp_path / "in" / "case one.nii.gz"
    second = tmp_path / "in" / "case2.nrrd"
    write_image(base_image, first)
    write_image(sitk.DICOMOrient(base_image, "RPS"), second)
    out = tmp_path / "out"
    rc, events, stderr = run_cli(str(first), str(second), "-m", str(bundle_path), "-o", str(out),
                                 "--format", "seg.nrrd", "--probabilities", "--uncertainty", "--device", "cpu",
                                 "--threads", "1")
    assert rc == 0, stderr
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "error" not in kinds
    assert all(e["schema"] == 1 and e["job"] == "segment" for e in events)
    assert events[0]["total"] == 2
    windows = [e for e in events if e["event"] == "progress" and e.get("unit") == "window"]
    assert windows and windows[-1]["done"] == windows[-1]["total"]
    outputs = {e["path"]: e["kind"] for e in events if e["event"] == "output"}
    assert sorted(outputs.values()) == ["probabilities"] * 2 + ["segmentation"] * 2 + ["uncertainty"] * 2
    assert all(Path(p).is_file() for p in outputs)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]

    seg = sitk.ReadImage(str(out / "case one_segmentation.seg.nrrd"))
    assert seg.GetMetaData("Segment0_Name") == "blob" and seg.GetMetaData("Segment0_LabelValue") == "1"
    api = segment_image(bundle, read_image(first))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(api.labels))
    reference = read_image(first)
    assert seg.GetSize() == reference.GetSize()
    np.testing.assert_allclose(seg.GetOrigin(), reference.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(seg.GetDirection(), reference.GetDirection(), atol=1e-6)
    seg2 = sitk.ReadImage(str(out / "case2_segmentation.seg.nrrd"))
    back = sitk.DICOMOrient(seg2, sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reference.GetDirection()))
    assert np.mean(sitk.GetArrayFromImage(back) == sitk.GetArrayFromImage(seg)) > 0.999
    probs = sitk.ReadImage(str(out / "case2_probabilities.nrrd"))
    assert probs.GetNumberOfComponentsPerPixel() == 2 and probs.GetSize() == seg2.GetSize()


def test_cli_bad_inputs_write_nothing(bundle_path, base_image, tmp_path, capsys):
    good = tmp_path / "good.nii.gz"
    write_image(base_image, good)
    out = tmp_path / "out"
    out.mkdir()

    # Existing output: refused before any work (real subprocess, no torch import needed), file untouched.
    existing = out / "good_segmentation.nii.gz"
    existing.write_bytes(b"keep me")
    rc, events, _ = run_cli(str(good), "-m", str(bundle_path), "-o", str(out))
    assert rc == 2 and events[-1]["event"] == "error" and events[-1]["kind"] == "bad_input"
    assert "--overwrite" in events[-1]["message"] and existing.read_bytes() == b"keep me"
    existing.unlink()

    # 2-D input, missing file, one output file for two cases, missing bundle: exit 2, the message names
    # the problem.
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(flat))
    for args, needle in [
        ((str(flat),), "2-D"),
        ((str(tmp_path / "nope.nii.gz"),), "not found"),
        ((str(good), str(good), "-o", str(out / "one.nii.gz")), "file name"),
        ((str(good), "-m", str(tmp_path / "missing.lightunetr")), "bundle not found"),
    ]:
        full = list(args)
        if "-m" not in full:
            full += ["-m", str(bundle_path)]
        if "-o" not in full:
            full += ["-o", str(out)]
        rc, events = run_cli_here(capsys, *full)
        assert rc == 2, (args, events)
        assert events[-1]["kind"] == "bad_input" and needle in events[-1]["message"], events[-1]
    assert list(out.iterdir()) == []


def test_cli_nan_case_and_cancel(bundle_path, base_image, tmp_path, capsys):
    good = tmp_path / "good.nii.gz"
    write_image(base_image, good)
    nan = tmp_path / "nan.mha"
    array = sitk.GetArrayFromImage(base_image)
    array[3, 4, 5] = np.nan
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(base_image)
    sitk.WriteImage(bad, str(nan))
    out = tmp_path / "out"
    rc, events = run_cli_here(capsys, str(good), str(nan), "-m", str(bundle_path), "-o", str(out))
    assert rc == 2 and events[-1]["event"] == "error" and "NaN" in events[-1]["message"]
    assert events[-1]["case"] == 1
    # The finished first case is complete; nothing (not even a temporary file) for the bad one.
    assert sorted(p.name for p in out.iterdir()) == ["good_segmentation.nii.gz"]
    assert sitk.ReadImage(str(out / "good_segmentation.nii.gz")).GetSize() == base_image.GetSize()

    flag = tmp_path / "stop"
    flag.touch()
    rc, events = run_cli_here(capsys, str(good), "-m", str(bundle_path), "-o", str(tmp_path / "out2"),
                              "--cancel-file", str(flag))
    assert rc == 3 and events[-1]["event"] == "cancelled"
    assert not (tmp_path / "out2").exists() or list((tmp_path / "out2").iterdir()) == []


def test_two_channel_model_api_and_cli_channel_count(tmp_path, base_image, capsys):
    torch.manual_seed(2)
    args = {**TINY_ARGS, "in_channels": 2}
    from lightunetr_core.models import build_model

    card = ModelCard(
        name="two", architecture="lightunetr", architecture_args=args, patch_size=list(PATCH),
        preprocessing=PreprocessingPlan(target_spacing=(3.0,) * 3, normalization=[
            IntensityNormalization("zscore"), IntensityNormalization("ct")]).to_dict(),
        input_channels=["T1", "CT"], labels=default_labels(["background", "a"]))
    path = save_bundle(tmp_path / "two", build_model("lightunetr", **args).eval(), card)
    loaded = load_bundle(path)
    second = sitk.Cast(base_image * 3 - 100, sitk.sitkInt16)
    result = segment_image(loaded, [base_image, second])
    assert_same_grid(result.labels, base_image)
    shifted = sitk.Image(second)
    shifted.SetOrigin([o + 1.0 for o in second.GetOrigin()])
    with pytest.raises(InferenceInputError, match="does not share the voxel grid"):
        segment_image(loaded, [base_image, shifted])

    first = tmp_path / "t1.nii.gz"
    write_image(base_image, first)
    rc, events = run_cli_here(capsys, str(first), str(first), str(first), "-m", str(path), "-o", str(tmp_path / "o"))
    assert rc == 2 and "2 input channel(s) per case (T1, CT)" in events[-1]["message"]
    assert not (tmp_path / "o").exists()


def test_dense_stride_segments_like_overlap_and_bad_stride_is_refused(bundle, bundle_path, base_image, tmp_path,
                                                                        capsys):
    # The reference's dense test places windows a fixed step apart with uniform weights.
    dense = segment_image(bundle, base_image, stride=(8, 8, 8), blend="constant")
    assert_same_grid(dense.labels, base_image)
    truth = inside(physical_points(base_image))
    assert dice(image_to_array(dense.labels) == 1, truth) > 0.7
    with pytest.raises(InferenceInputError, match="stride"):
        segment_image(bundle, base_image, stride=(0, 8, 8))
    source = tmp_path / "case.nrrd"
    sitk.WriteImage(base_image, str(source))
    rc, events = run_cli_here(capsys, str(source), "-m", str(bundle_path), "-o", str(tmp_path / "out"),
                              "--stride", "64", "8", "8")
    assert rc == 2 and events[-1]["event"] == "error" and "--stride" in events[-1]["message"]
    assert not (tmp_path / "out").exists()


def test_inference_options_round_trip_through_the_command_line():
    """The Slicer job builds its arguments with to_cli_args; the CLI reads them back with from_cli_args."""
    from lightunetr_core.cli import build_parser
    from lightunetr_core.inference import InferenceOptions
    from lightunetr_core.vocabulary import InputError

    for options in (InferenceOptions(device="cpu"),
                    InferenceOptions(overlap=0.25, tta_flips=True, largest_component=True, return_uncertainty=True,
                                     return_probabilities=True, roi=(1.5, -2.0, 3.0, 40.0, 50.25, 60.0),
                                     sw_batch_size=4, device="cuda:1", backend="torch", threads=3, blend="constant"),
                    InferenceOptions(stride=(18, 18, 4), device="auto"),
                    InferenceOptions(largest_component="auto", device="cpu")):
        args = build_parser().parse_args(["segment", "in.nii.gz", "-m", "m.lightunetr", "-o", "out",
                                          *options.to_cli_args()])
        assert InferenceOptions.from_cli_args(args) == options
    with pytest.raises(InputError, match="overlap"):
        InferenceOptions(overlap=1.0)
    with pytest.raises(InputError, match="largest component"):
        InferenceOptions(largest_component="some")


def test_largest_component_auto_keeps_the_parts_of_a_multi_part_class():
    """'auto' keeps the largest component only of the classes the card names as one structure (decided from the
    labelled cases at training), so both kidneys survive; True is the authors' rule for every class."""
    from types import SimpleNamespace

    from lightunetr_core.inference import InferenceOptions

    card = SimpleNamespace(num_classes=4, provenance={"largest_component_classes": [1, 3]})
    assert InferenceOptions(largest_component="auto").largest_component_classes(card) == [1, 3]
    assert InferenceOptions(largest_component=True).largest_component_classes(card) == [1, 2, 3]
    assert InferenceOptions().largest_component_classes(card) == []
    older = SimpleNamespace(num_classes=3, provenance={})  # a card from before the rule: every class
    assert InferenceOptions(largest_component="auto").largest_component_classes(older) == [1, 2]
