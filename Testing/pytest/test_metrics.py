"""Metrics in mm (lightunetr_core.metrics) and the ``evaluate`` command, on real arrays and real files.

Cross-checked against MONAI's metric functions and against analytic distances of spheres.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lightunetr_core.metrics import (
    STATUS_BOTH_EMPTY,
    STATUS_LABEL_EMPTY,
    STATUS_OK,
    STATUS_PREDICTION_EMPTY,
    binary_metrics,
    compute_metrics,
    summarize,
    surface_mask,
)

SPACING = (0.7, 1.3, 2.0)  # anisotropic, array axis order
SHAPE = (72, 48, 32)


def _radius_map(shape=SHAPE, spacing=SPACING, centre_mm=None):
    axes = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)]
    grid = np.meshgrid(*axes, indexing="ij")
    centre = centre_mm if centre_mm is not None else [n * s / 2 for n, s in zip(shape, spacing)]
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))


def _monai(pred: np.ndarray, ref: np.ndarray, spacing):
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    p = torch.from_numpy(pred)[None, None].float()
    r = torch.from_numpy(ref)[None, None].float()
    return {
        "dice": compute_dice(p, r, include_background=True).item(),
        "hd95_mm": compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing).item(),
        "hd_mm": compute_hausdorff_distance(p, r, include_background=True, spacing=spacing).item(),
        "assd_mm": compute_average_surface_distance(p, r, include_background=True, symmetric=True,
                                                    spacing=spacing).item(),
    }


def test_concentric_spheres_analytic_and_monai():
    radius = _radius_map()
    inner, outer = radius <= 12.0, radius <= 18.0
    m = binary_metrics(inner, outer, SPACING)
    assert m["status"] == STATUS_OK
    # Every surface point of one sphere is |r1 - r2| = 6 mm from the other; voxelisation adds at most
    # about one voxel (largest spacing 2 mm).
    assert abs(m["hd95_mm"] - 6.0) <= 2.0
    assert abs(m["hd_mm"] - 6.0) <= 2.0
    assert abs(m["assd_mm"] - 6.0) <= 2.0
    # Dice of nested spheres = 2 V1 / (V1 + V2) = 2 r1³ / (r1³ + r2³).
    assert m["dice"] == pytest.approx(2 * 12**3 / (12**3 + 18**3), abs=0.03)
    assert m["jaccard"] == pytest.approx(m["dice"] / (2 - m["dice"]), rel=1e-12)
    # Volumes in ml from the spacing: (4/3)π r³ mm³.
    assert m["reference_volume_ml"] == pytest.approx(4 / 3 * math.pi * 18**3 / 1000, rel=0.03)
    ref = _monai(inner, outer, SPACING)
    for key in ("dice", "hd95_mm", "hd_mm", "assd_mm"):
        assert m[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-5), key


def test_distances_use_spacing_not_voxels():
    """A shift of 3 voxels along the 2 mm axis is 6 mm; along the 0.7 mm axis 2.1 mm."""
    box = np.zeros(SHAPE, dtype=bool)
    box[20:40, 10:30, 8:20] = True
    shifted_z = np.roll(box, 3, axis=2)
    shifted_x = np.roll(box, 3, axis=0)
    assert binary_metrics(box, shifted_z, SPACING)["hd_mm"] == pytest.approx(6.0)
    assert binary_metrics(box, shifted_x, SPACING)["hd_mm"] == pytest.approx(2.1)
    assert binary_metrics(box, shifted_z)["hd_mm"] == pytest.approx(3.0)  # default spacing 1 = voxels


def test_noisy_shapes_match_monai_and_are_symmetric():
    rng = np.random.default_rng(7)
    radius = _radius_map()
    pred = (radius <= 14.0) ^ (rng.random(SHAPE) < 0.005)  # outliers far from the surface
    ref = _radius_map(centre_mm=(26.0, 30.0, 33.0)) <= 15.0
    m = binary_metrics(pred, ref, SPACING)
    ref_values = _monai(pred, ref, SPACING)
    for key in ("dice", "hd95_mm", "hd_mm", "assd_mm"):
        assert m[key] == pytest.approx(ref_values[key], rel=1e-5, abs=1e-5), key
    swapped = binary_metrics(ref, pred, SPACING)
    for key in ("dice", "jaccard", "hd95_mm", "hd_mm", "assd_mm"):
        assert swapped[key] == pytest.approx(m[key], rel=1e-12), key
    assert m["hd95_mm"] < m["hd_mm"]  # outliers pull the maximum, not the 95th percentile


def test_object_touching_the_border_and_identical_masks():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[:8, 5:15, 5:15] = True  # touches the array border: border voxels are surface
    assert surface_mask(mask)[0, 10, 10]
    m = binary_metrics(mask, mask.copy(), (1.0, 2.0, 3.0))
    assert (m["dice"], m["jaccard"], m["hd95_mm"], m["hd_mm"], m["assd_mm"]) == (1.0, 1.0, 0.0, 0.0, 0.0)


def test_empty_masks_are_reported_not_scored():
    empty = np.zeros((16, 16, 16), dtype=bool)
    full = empty.copy()
    full[4:10, 4:10, 4:10] = True
    both = binary_metrics(empty, empty, (1, 1, 1))
    assert both["status"] == STATUS_BOTH_EMPTY and math.isnan(both["dice"]) and math.isnan(both["hd95_mm"])
    missed = binary_metrics(empty, full, (1, 1, 1))
    assert missed["status"] == STATUS_PREDICTION_EMPTY
    assert missed["dice"] == 0.0 and math.isnan(missed["hd95_mm"]) and math.isnan(missed["assd_mm"])
    spurious = binary_metrics(full, empty, (1, 1, 1))
    assert spurious["status"] == STATUS_LABEL_EMPTY and math.isnan(spurious["hd_mm"])


def test_compute_metrics_multiclass_and_summary():
    radius = _radius_map()
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[radius <= 16] = 1
    ref[radius <= 8] = 2
    pred = ref.copy()
    pred[pred == 2] = 1  # class 2 missed entirely
    pred[:4, :4, :4] = 3  # spurious class 3
    metrics = compute_metrics(pred, ref, spacing=SPACING, label_names={1: "organ", 2: "lesion"})
    by_label = {m.label: m for m in metrics}
    assert sorted(by_label) == [1, 2, 3]
    assert by_label[1].name == "organ" and by_label[1].status == STATUS_OK
    assert by_label[2].status == STATUS_PREDICTION_EMPTY and by_label[2].dice == 0.0
    assert by_label[3].status == STATUS_LABEL_EMPTY and by_label[3].name == "label_3"
    expected_dice_1 = 2 * np.sum((pred == 1) & (ref == 1)) / (np.sum(pred == 1) + np.sum(ref == 1))
    assert by_label[1].dice == pytest.approx(expected_dice_1)
    # A second, perfect case; class 2 Dice mean = (0 + 1)/2, HD95 mean only over the defined value.
    perfect = compute_metrics(ref, ref, spacing=SPACING, labels=[1, 2, 3])
    summary = summarize([metrics, perfect])
    class2 = summary["per_class"][2]
    assert class2["counts"] == {STATUS_OK: 1, STATUS_PREDICTION_EMPTY: 1}
    assert class2["dice"]["mean"] == pytest.approx(0.5) and class2["dice"]["n"] == 2
    assert class2["hd95_mm"]["mean"] == 0.0 and class2["hd95_mm"]["n"] == 1
    assert summary["per_class"][3]["counts"] == {STATUS_BOTH_EMPTY: 1, STATUS_LABEL_EMPTY: 1}
    assert summary["per_class"][3]["dice"]["n"] == 1  # both_empty (NaN) is left out


def test_rejects_probability_maps_and_bad_spacing():
    probs = np.full((8, 8, 8), 0.4, dtype=np.float32)
    with pytest.raises(ValueError, match="probability map"):
        compute_metrics(probs, np.zeros((8, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(np.ones((4, 4, 4), bool), np.ones((4, 4, 4), bool), (1.0, 0.0, 1.0))


# --------------------------------------------------------------------------------------- CLI on real files
def _write(path: Path, array: np.ndarray, spacing=(0.8, 0.9, 2.5), origin=(-10.0, 5.0, 30.0),
           direction=(1, 0, 0, 0, -1, 0, 0, 0, 1)) -> Path:
    image = sitk.GetImageFromArray(array)  # array (z, y, x)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def _evaluate(*args, cwd=None):
    # The real command line in a real process (python -m lightunetr_core = the ``lightunetr`` script).
    return subprocess.run([sys.executable, "-m", "lightunetr_core", "evaluate", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_evaluate_registered_in_dispatcher():
    from lightunetr_core.cli import COMMAND_MODULES

    assert "evaluate" in COMMAND_MODULES


@pytest.fixture()
def case_folders(tmp_path):
    zyx = (24, 40, 36)  # small CT-like grid, axes (z, y, x)
    spacing_xyz = (0.8, 0.9, 2.5)
    radius = _radius_map(zyx, spacing_xyz[::-1])
    ref_a = np.zeros(zyx, np.uint8)
    ref_a[radius <= 14] = 1
    ref_a[radius <= 6] = 2
    pred_a = np.zeros(zyx, np.uint8)
    pred_a[radius <= 12] = 1  # label 2 missed
    ref_b = (radius <= 10).astype(np.uint8)
    pred_b = ref_b.copy()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    _write(tmp_path / "pred" / "case_a.nii.gz", pred_a)
    _write(tmp_path / "ref" / "case_a.nrrd", ref_a)
    _write(tmp_path / "pred" / "case_b.nii.gz", pred_b)
    _write(tmp_path / "ref" / "case_b.nii.gz", ref_b)
    return tmp_path, spacing_xyz, (pred_a, ref_a)


def test_evaluate_folders_json_csv(case_folders):
    root, spacing_xyz, (pred_a, ref_a) = case_folders
    out_json, out_csv = root / "out" / "m.json", root / "out" / "m.csv"
    proc = _evaluate("--prediction", root / "pred", "--reference", root / "ref", "--label-names", "organ", "core",
                     "--json", out_json, "--csv", out_csv, "--events", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["event"] == "started" and events[-1]["event"] == "finished"
    assert {e["path"] for e in events if e["event"] == "output"} == {str(out_json), str(out_csv)}
    result = json.loads(out_json.read_text())
    assert [c["case"] for c in result["cases"]] == ["case_a", "case_b"]
    case_a = {c["label"]: c for c in result["cases"][0]["classes"]}
    assert case_a[1]["name"] == "organ" and case_a[2]["status"] == "prediction_empty"
    assert case_a[2]["hd95_mm"] is None  # NaN is written as JSON null
    # Same numbers as the library on the (z, y, x) arrays with the reversed spacing.
    direct = binary_metrics(pred_a == 1, ref_a == 1, spacing_xyz[::-1])
    assert case_a[1]["hd95_mm"] == pytest.approx(direct["hd95_mm"], rel=1e-9)
    assert case_a[1]["dice"] == pytest.approx(direct["dice"], rel=1e-9)
    case_b = {c["label"]: c for c in result["cases"][1]["classes"]}
    assert case_b[1]["dice"] == 1.0 and case_b[2]["status"] == "both_empty"
    summary = result["summary"]["per_class"]
    assert summary["1"]["dice"]["mean"] == pytest.approx((direct["dice"] + 1.0) / 2)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * 2 + 2  # two cases × two labels + two mean rows
    assert {(r["case"], r["label"], r["status"]) for r in rows if r["case"] == "case_a"} == {
        ("case_a", "1", "ok"), ("case_a", "2", "prediction_empty")}
    assert [p.name for p in out_json.parent.iterdir()] and not list(out_json.parent.glob(".*.tmp"))


def test_evaluate_explicit_files_and_label_subset(case_folders):
    root, _, _ = case_folders
    proc = _evaluate("-p", root / "pred" / "case_a.nii.gz", "-r", root / "ref" / "case_a.nrrd", "--labels", "2",
                     "--json", root / "one.json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((root / "one.json").read_text())
    assert [c["label"] for c in result["cases"][0]["classes"]] == [2]
    assert "prediction_empty" in proc.stdout  # human summary table


def test_evaluate_rejects_grid_mismatch_without_writing(case_folders):
    root, _, (pred_a, _) = case_folders
    shifted = _write(root / "shifted.nii.gz", pred_a, origin=(-10.0, 5.0, 32.5))
    proc = _evaluate("-p", shifted, "-r", root / "ref" / "case_a.nrrd", "--json", root / "bad.json")
    assert proc.returncode == 2
    assert "not on the same voxel grid" in proc.stderr and "origin" in proc.stderr and "Resample" in proc.stderr
    assert not (root / "bad.json").exists()


def test_evaluate_rejects_missing_prediction_in_folder(case_folders):
    root, _, _ = case_folders
    (root / "pred" / "case_b.nii.gz").unlink()
    proc = _evaluate("-p", root / "pred", "-r", root / "ref", "--csv", root / "x.csv", "--events", "json")
    assert proc.returncode == 2
    error = [json.loads(line) for line in proc.stdout.splitlines()][-1]
    assert error["event"] == "error" and error["kind"] == "bad_input" and "case_b" in error["message"]
    assert not (root / "x.csv").exists()
