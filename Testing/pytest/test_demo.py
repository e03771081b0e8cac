"""The synthetic demo task and the ``lightunetr demo-data`` / ``lightunetr demo`` commands."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lightunetr_core.data.manifest import load_manifest
from lightunetr_core.data.demo import best_threshold_dice, generate_case, generate_demo_dataset, otsu_threshold, split_counts


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.parametrize("classes", [1, 2])
def test_threshold_cannot_solve_the_task(classes):
    best = []
    for i in range(4):  # indices 0-3: identity, flipped, identity, oblique
        case = generate_case(f"c{i}", seed=100 + i, index=i, classes=classes)
        fg = case.label > 0
        # Non-trivial labels: a few percent of the volume, every declared class present.
        assert 0.01 < fg.mean() < 0.1
        assert set(np.unique(case.label)) == set(range(classes + 1))
        otsu = otsu_threshold(case.image)
        pred = case.image > otsu
        otsu_dice = 2 * np.logical_and(pred, fg).sum() / (pred.sum() + fg.sum())
        assert otsu_dice < 0.7
        dice, _ = best_threshold_dice(case.image, case.label)
        best.append(dice)
        assert dice < 0.8, f"case {i}: a global threshold reaches Dice {dice:.3f}"
    assert np.mean(best) < 0.75


def test_generator_is_deterministic_and_varied():
    a = generate_case("a", seed=5, index=0)
    b = generate_case("a", seed=5, index=0)
    c = generate_case("a", seed=6, index=0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)


def test_written_dataset_geometry(tmp_path):
    manifest = generate_demo_dataset(tmp_path / "d", cases=8, labeled=2, seed=0, classes=2, shape=(40, 36, 16))
    spec = load_manifest(manifest)
    assert spec.labels == {0: "background", 1: "organ", 2: "second"}
    counts = {r: len(spec.by_role(r)) for r in ("labeled", "unlabeled", "validation", "test")}
    assert counts == {"labeled": 2, "unlabeled": 2, "validation": 2, "test": 2}
    kinds = set()
    for case in spec.cases:
        image = sitk.ReadImage(str(case.images[0]))
        assert image.GetSize() == (40, 36, 16)
        assert image.GetSpacing() == pytest.approx((1.0, 1.0, 2.5))  # anisotropic
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(direction @ direction.T, np.eye(3), atol=1e-6)
        if np.allclose(direction, np.eye(3)):
            kinds.add("identity")
        elif np.allclose(np.abs(direction), np.eye(3)):
            kinds.add("flipped")
        else:
            kinds.add("oblique")
        # The volume's centre sits at world (0, 0, 0) whatever the direction.
        centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
        np.testing.assert_allclose(centre, 0.0, atol=1e-3)  # headers store float32
        if case.label is not None:
            label = sitk.ReadImage(str(case.label))
            assert label.GetPixelID() == sitk.sitkUInt8
            assert label.GetOrigin() == pytest.approx(image.GetOrigin()) and label.GetDirection() == pytest.approx(image.GetDirection())
        assert (case.label is None) == (case.role == "unlabeled")
    assert kinds == {"identity", "flipped", "oblique"}
    # Anatomy is defined in world space: flipped cases show the organ in the same physical place.
    organ_world = []
    for case in spec.by_role("labeled") + spec.by_role("validation"):
        label = sitk.ReadImage(str(case.label))
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(label)
        organ_world.append(stats.GetCentroid(1))
    assert all(np.linalg.norm(np.asarray(c)[:2]) < 15 for c in organ_world)


def test_split_counts_rejects_impossible_splits():
    assert split_counts(16, 4) == {"labeled": 4, "unlabeled": 6, "validation": 2, "test": 4}
    with pytest.raises(ValueError, match="raise --cases"):
        split_counts(4, 3)
    with pytest.raises(ValueError, match="at least 1"):
        split_counts(10, 0)


def test_demo_data_cli_writes_atomically(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "lightunetr_core", "demo-data", str(out), "--cases", "6", "--labeled", "2", "--seed", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == out / "dataset.json"
    assert len(load_manifest(out / "dataset.json").cases) == 6
    # A second run into the non-empty folder is refused and changes nothing.
    before = sorted(p.name for p in out.rglob("*"))
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr and "--overwrite" in again.stderr
    assert sorted(p.name for p in out.rglob("*")) == before
    bad = subprocess.run([sys.executable, "-m", "lightunetr_core", "demo-data", str(tmp_path / "x"), "--cases", "3", "--labeled", "3"],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert bad.returncode == 2 and "raise --cases" in bad.stderr
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    """``lightunetr demo --quick``: data, CSE and supervised training, test-set segmentation, Dice table."""
    from lightunetr_core.bundle import read_model_card
    from lightunetr_core.cli import train as train_cli

    out = tmp_path / "demo_output"
    done = subprocess.run([sys.executable, "-m", "lightunetr_core", "demo", str(out), "--quick", "--events", "json"],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "finished" and events[-1]["job"] == "demo"
    table = json.loads((out / "dice.json").read_text())
    assert table["methods"] == ["cse", "supervised"]
    spec = load_manifest(out / "data" / "dataset.json")
    assert [row["id"] for row in table["cases"]] == [c.id for c in spec.by_role("test")]
    for method in ("cse", "supervised"):
        assert 0.0 <= table["mean"][method]["1"] <= 1.0
        for row in table["cases"]:
            seg = sitk.ReadImage(str(out / "segmentations" / method / f"{row['id']}.nii.gz"))
            ref = sitk.ReadImage(str(spec.by_role("test")[[c.id for c in spec.by_role("test")].index(row["id"])].label))
            assert seg.GetSize() == ref.GetSize() and seg.GetDirection() == pytest.approx(ref.GetDirection())
            a, b = sitk.GetArrayFromImage(seg) == 1, sitk.GetArrayFromImage(ref) == 1
            dice = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
            assert row["dice"][method]["1"] == pytest.approx(dice, abs=1e-9)
        assert (out / "runs" / method / f"{method}.lightunetr").is_dir()
        # The demo trains in-process: the card records the command line that repeats the training (not the
        # demo's own argv), and CSE and the baseline share their sampling and schedule.
        card = read_model_card(out / "runs" / method / f"{method}.lightunetr")
        line = card.provenance["command_line"]
        assert line[:2] == ["lightunetr", "train"] and "demo" not in line
        parser = argparse.ArgumentParser()
        train_cli.register(parser.add_subparsers())
        request, _ = train_cli.request_from_args(parser.parse_args(line[1:]))
        assert request.recipe == {"cse": "cse-reference", "supervised": "supervised"}[method]
        assert request.run_dir == str(out / "runs" / method) and request.iterations == table["iterations"]
        assert card.provenance["foreground_oversample"] == 0.33 and card.provenance["warmup"] == 1
