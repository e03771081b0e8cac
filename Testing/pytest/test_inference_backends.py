"""Inference backends (PyTorch vs ONNX Runtime), the ONNX cache, the missing-onnxruntime path in a real
subprocess, and the boundary-only resampling of the label map back onto the input grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lightunetr_core.bundle import ModelCard, default_labels, load_bundle, save_bundle
from lightunetr_core.data import IntensityNormalization, PreprocessingPlan, image_to_array, preprocess_case
from lightunetr_core.inference import (
    BackendUnavailableError,
    count_windows,
    resolve_backend,
    segment_image,
)
from lightunetr_core.inference.backends import onnx_cache_dir, onnx_cache_key, prune_onnx_cache
from lightunetr_core.inference.input_grid import labels_on_original_grid, mixed_cell_corners
from lightunetr_core.jobs import CancelToken, JobCancelled

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

PATCH = [32, 32, 32]
ARGS = {"in_channels": 1, "num_classes": 3, "patch_size": PATCH, "channels": [18, 24, 36, 48],
        "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "dropout": 0.0}


def rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("LIGHTUNETR_CACHE")
    os.environ["LIGHTUNETR_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("LIGHTUNETR_CACHE", None)
    else:
        os.environ["LIGHTUNETR_CACHE"] = old


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    from lightunetr_core.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(1)
    model = build_model("lightunetr", **ARGS).eval()
    card = ModelCard(
        name="three", architecture="lightunetr", architecture_args=ARGS, patch_size=PATCH,
        preprocessing=PreprocessingPlan(target_spacing=(2.0, 2.0, 2.0),
                                        normalization=[IntensityNormalization("zscore")]).to_dict(),
        input_channels=["MR"], labels=default_labels(["background", "a", "b"]),
    )
    return save_bundle(tmp_path_factory.mktemp("bundle") / "three", model, card)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in (22, 36, 44)), indexing="ij")
    voxels = 100 * np.exp(-((xx - 0.2) ** 2 + yy ** 2 + zz ** 2) * 4) + rng.normal(0, 5, xx.shape)
    img = sitk.GetImageFromArray(voxels.astype(np.float32))
    img.SetSpacing((1.7, 1.3, 2.9))
    img.SetDirection((rotation("z", 25) @ np.diag([1.0, -1.0, 1.0])).ravel())  # oblique, left-handed
    img.SetOrigin((4.0, -7.0, 12.0))
    return img


@pytest.fixture(scope="module")
def torch_result(bundle_path, image):
    bundle = load_bundle(bundle_path, device="cpu")
    return segment_image(bundle, image, backend="torch", return_probabilities=True)


def test_onnxruntime_matches_torch_and_caches_the_export(cache_root, bundle_path, image, torch_result):
    bundle_files = sorted(p.name for p in bundle_path.iterdir())
    bundle = load_bundle(bundle_path, device="cpu")
    calls = []
    result = segment_image(bundle, image, backend="onnxruntime", return_probabilities=True,
                           progress=lambda done, total: calls.append((done, total)))
    assert result.backend == "onnxruntime" and torch_result.backend == "torch"
    assert any("exporting the network to ONNX" in m for m in result.messages)
    labels, reference = image_to_array(result.labels), image_to_array(torch_result.labels)
    assert len(np.unique(reference)) >= 2  # the comparison is not trivial
    assert np.mean(labels == reference) >= 0.999
    p = image_to_array(result.probabilities)
    q = image_to_array(torch_result.probabilities)
    assert p.shape == q.shape and np.abs(p - q).max() <= 1e-4
    for a in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(result.labels, a)() == getattr(image, a)()
    # progress per window batch, through the whole count
    model_size = preprocess_case([image], bundle.card.plan).model.size
    total = count_windows(model_size, PATCH, 0.5)
    assert calls == [(i, total) for i in range(1, total + 1)]

    # one verified .onnx in the cache folder, keyed by the weights; nothing beside the bundle
    files = list(onnx_cache_dir().glob("*.onnx"))
    assert onnx_cache_dir().parent == cache_root and len(files) == 1
    assert bundle.card.weights_sha256[:12] in files[0].name
    assert sorted(p.name for p in bundle_path.iterdir()) == bundle_files
    inode = files[0].stat().st_ino  # a new export would rename a new file into place

    # "auto" on the CPU picks ONNX Runtime and reuses the cached file (no second export)
    again = segment_image(load_bundle(bundle_path, device="cpu"), image, backend="auto")
    assert again.backend == "onnxruntime" and not any("exporting" in m for m in again.messages)
    assert files[0].stat().st_ino == inode and len(list(onnx_cache_dir().glob("*.onnx"))) == 1
    np.testing.assert_array_equal(image_to_array(again.labels), labels)

    # other weights in memory → another cache key, so a stale export is never reused
    changed = load_bundle(bundle_path, device="cpu")
    assert onnx_cache_key(changed) == onnx_cache_key(bundle)
    with torch.no_grad():
        next(changed.model.parameters()).add_(0.5)
    assert onnx_cache_key(changed) != onnx_cache_key(bundle)


def test_onnxruntime_cancel_between_windows(cache_root, bundle_path, image, tmp_path):
    flag = tmp_path / "stop"
    flag.touch()
    with pytest.raises(JobCancelled):
        segment_image(load_bundle(bundle_path, device="cpu"), image, backend="onnxruntime", cancel=CancelToken(flag))


def test_cache_pruning_keeps_the_most_recently_used(tmp_path):
    for i in range(6):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
    (tmp_path / "note.txt").write_text("not an export")
    deleted = prune_onnx_cache(tmp_path, keep=3, protect=tmp_path / "m0.onnx")
    assert sorted(p.name for p in deleted) == ["m1.onnx", "m2.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.onnx", "m3.onnx", "m4.onnx", "m5.onnx", "note.txt"]


def test_backend_choice():
    assert resolve_backend("auto", "cpu") == "onnxruntime"  # onnxruntime is installed here
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("auto", torch.device("mps")) == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("onnxruntime", torch.device("cpu")) == "onnxruntime"
    with pytest.raises(BackendUnavailableError, match="CPU only"):
        resolve_backend("onnxruntime", torch.device("cuda", 0))
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        resolve_backend("tensorrt", "cpu")


def test_without_onnxruntime_auto_uses_torch_and_explicit_request_says_how_to_install(bundle_path, image, tmp_path):
    """A real interpreter in which ``import onnxruntime`` fails (blocked before lightunetr_core is imported)."""
    path = tmp_path / "in.nrrd"
    sitk.WriteImage(image, str(path))
    script = textwrap.dedent(f"""
        import sys, json
        sys.modules["onnxruntime"] = None          # import onnxruntime -> ImportError
        from lightunetr_core.inference import BackendUnavailableError, resolve_backend, segment_image
        from lightunetr_core.bundle import load_bundle
        out = {{"auto": resolve_backend("auto", "cpu")}}
        result = segment_image(load_bundle({str(bundle_path)!r}), {str(path)!r}, backend="auto")
        out["auto_result"] = result.backend
        try:
            segment_image(load_bundle({str(bundle_path)!r}), {str(path)!r}, backend="onnxruntime")
        except BackendUnavailableError as exc:
            out["explicit"] = str(exc)
        from lightunetr_core.cli import main
        out["cli_rc"] = main(["segment", {str(path)!r}, "-m", {str(bundle_path)!r}, "-o",
                              {str(tmp_path / "out.nii.gz")!r}, "--backend", "onnxruntime", "--events", "json"])
        print("RESULT " + json.dumps(out))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "LIGHTUNETR_CACHE": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    out = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    assert out["auto"] == "torch" and out["auto_result"] == "torch"
    assert "pip install 'lightunetr-core[onnx]'" in out["explicit"] and "onnxruntime" in out["explicit"]
    assert out["cli_rc"] == 2
    events = [json.loads(line) for line in lines if line.startswith("{")]
    error = [e for e in events if e["event"] == "error"]
    assert error and error[0]["kind"] == "bad_input" and "lightunetr-core[onnx]" in error[0]["message"]
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "c").exists()


# --- label map back on the input grid -----------------------------------------------------------------------

@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("grid", ["oblique_left_handed", "flipped_anisotropic", "coarser_input"])
def test_boundary_only_resampling_equals_full_resampling(grid, classes):
    """Compact objects (few mixed cells: nearest-neighbour + boxes) and dense boundaries (whole-grid
    resampling of the differences) both equal the full per-class resampling."""
    from scipy import ndimage

    from lightunetr_core.inference import input_grid

    size, spacing, direction, target = {
        "oblique_left_handed": ((44, 38, 21), (1.6, 1.9, 2.7), rotation("z", 20) @ np.diag([1.0, -1.0, 1.0]), 2.0),
        "flipped_anisotropic": ((30, 62, 33), (3.0, 1.1, 1.3), np.diag([-1.0, -1.0, 1.0]), 1.5),
        "coarser_input": ((20, 18, 16), (2.5, 2.5, 3.0), rotation("x", -12), 1.0),
    }[grid]
    rng = np.random.default_rng(classes)
    img = sitk.GetImageFromArray(np.zeros(size[::-1], np.float32))
    img.SetSpacing(spacing)
    img.SetDirection(direction.ravel())
    img.SetOrigin((3.0, -2.0, 5.0))
    case = preprocess_case([img], PreprocessingPlan(target_spacing=(target,) * 3,
                                                    normalization=[IntensityNormalization("none")]))
    assert case.resampled
    grid_points = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in case.model.size), indexing="ij"))
    compact = np.stack([np.zeros(case.model.size)] + [
        8 * (0.5 - np.sqrt((((grid_points - rng.uniform(-0.5, 0.5, (3, 1, 1, 1))) / 0.3) ** 2).sum(0)))
        for _ in range(classes - 1)])
    dense = ndimage.gaussian_filter(rng.normal(size=(classes, *case.model.size)), (0, 1, 1, 1)) * 20
    fractions = []
    for logits in (compact, dense):
        p = np.exp(logits - logits.max(0))
        p = (p / p.sum(0)).astype(np.float32)
        fractions.append(input_grid.mixed_cell_corners(p.argmax(0).astype(np.uint8)).mean())
        reference = case.argmax_on_original_grid(p)
        fast = labels_on_original_grid(case, p)
        assert fast.shape == reference.shape == size and fast.dtype == np.uint8
        assert len(np.unique(reference)) == classes
        assert np.count_nonzero(fast != reference) <= max(1, reference.size // 100000)  # ties/rounding only
    assert fractions[0] < input_grid._DIRECT_ABOVE < fractions[1]  # both code paths ran


def test_no_resampling_when_grids_coincide():
    img = sitk.GetImageFromArray(np.zeros((8, 9, 10), np.float32))
    img.SetSpacing((2.0, 2.0, 2.0))
    img.SetDirection(np.diag([-1.0, 1.0, -1.0]).ravel())
    case = preprocess_case([img], PreprocessingPlan(target_spacing=(2.0, 2.0, 2.0),
                                                    normalization=[IntensityNormalization("none")]))
    assert not case.resampled
    p = np.random.default_rng(0).random((3, *case.model.size)).astype(np.float32)
    np.testing.assert_array_equal(labels_on_original_grid(case, p), case.to_original_grid(p).argmax(0))


def test_mixed_cell_corners():
    labels = np.zeros((5, 5, 5), np.uint8)
    assert not mixed_cell_corners(labels).any()
    labels[2, 2, 2] = 1
    mark = mixed_cell_corners(labels)
    assert mark[1:4, 1:4, 1:4].all() and mark.sum() == 27


def test_stride_places_windows_like_the_reference_dense_test():
    from lightunetr_core.inference.sliding import count_windows, overlap_for_stride

    # The authors' test_single_case: n = ceil((S − P)/stride) + 1 per axis; LA 150×150×88 → 4×4×3 = 48 windows.
    overlap = overlap_for_stride((18, 18, 4), (112, 112, 80))
    assert count_windows((150, 150, 88), (112, 112, 80), overlap) == 4 * 4 * 3
    # Pancreas-CT: 16, 16, 4 on 96³ patches; a 130×120×101 volume → 4×3×3... computed from the formula.
    import math

    size, patch, stride = (130, 120, 101), (96, 96, 96), (16, 16, 4)
    expected = math.prod(math.ceil((s - p) / t) + 1 for s, p, t in zip(size, patch, stride))
    assert count_windows(size, patch, overlap_for_stride(stride, patch)) == expected
    with pytest.raises(ValueError, match="between 1 and the patch size"):
        overlap_for_stride((0, 18, 4), (112, 112, 80))
