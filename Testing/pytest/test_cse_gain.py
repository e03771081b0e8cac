"""benchmarks/cse_gain.py at a tiny size (a smoke run, not the measurement): it trains the four runs, segments
the test cases and writes a report whose numbers come from those runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import cse_gain  # noqa: E402


def test_compute_matching_counts_the_samples_through_the_network():
    assert cse_gain.samples_per_iteration("supervised", 2, 2) == 2
    assert cse_gain.samples_per_iteration("cse-reference", 2, 2) == 12  # 4 + 4 + 2 + 2
    assert cse_gain.samples_per_iteration("cse-reference", 2, 2, lean=True) == 8
    assert cse_gain.samples_per_iteration("cse-paper", 1, 3) == 10


def test_held_aside_labels_make_the_upper_bound_manifest(tmp_path):
    from lightunetr_core.data.demo import generate_demo_dataset
    from lightunetr_core.data.manifest import load_manifest

    manifest = generate_demo_dataset(tmp_path / "d", cases=7, labeled=2, validation=1, test=2, shape=(32, 32, 16),
                                     keep_unlabeled_labels=True)
    spec = load_manifest(manifest)
    assert len(spec.by_role("unlabeled")) == 2 and all(c.label.is_file() for c in spec.by_role("unlabeled"))
    everything = load_manifest(cse_gain.held_aside_manifest(manifest, tmp_path / "out"))
    assert sorted(c.id for c in everything.by_role("labeled")) == sorted(
        c.id for c in spec.by_role("labeled") + spec.by_role("unlabeled"))
    assert [c.id for c in everything.by_role("test")] == [c.id for c in spec.by_role("test")]
    plain = generate_demo_dataset(tmp_path / "p", cases=7, labeled=2, validation=1, test=2, shape=(32, 32, 16))
    assert cse_gain.held_aside_manifest(plain, tmp_path / "out2") is None


def test_bootstrap_interval_brackets_the_mean():
    diff = np.array([0.1, 0.2, 0.0, 0.3, 0.15])
    lo, hi = cse_gain.bootstrap_interval(diff, 2000, seed=0)
    assert lo < diff.mean() < hi and lo >= diff.min() and hi <= diff.max()
    assert cse_gain.bootstrap_interval(np.full(4, 0.05), 100, seed=0) == pytest.approx((0.05, 0.05))


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    out = tmp_path / "gain"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "cse_gain.py"), "--demo", "--smoke", "--out", str(out),
                           "--threads", "1", "--bootstrap", "200"],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "cse_gain.json").read_text(encoding="utf-8"))
    assert list(report["runs"]) == list(cse_gain.RUNS)
    runs = report["runs"]
    assert runs["cse"]["recipe"] == "cse-reference" and runs["supervised-all"]["recipe"] == "supervised"
    assert runs["supervised-k-compute"]["iterations"] == max(3, round(3 * runs["supervised-k-compute"]["compute_ratio"]))
    # --match time on a CPU: the ratio of CPU seconds per iteration, which another program cannot tilt
    assert runs["supervised-k-compute"]["compute_ratio"] == pytest.approx(
        runs["cse"]["cpu_s_per_iteration"] / runs["supervised-k"]["cpu_s_per_iteration"])
    assert report["match"] == "time" and report["passes_ratio"] == 6.0
    for name, run in runs.items():
        assert Path(run["bundle"]).is_dir() and 0.0 <= run["mean_dice"] <= 1.0
        assert len(run["case_mean_dice"]) == len(report["test_cases"]) == 2
        assert run["mean_dice"] == pytest.approx(np.mean(run["case_mean_dice"]))
    diff = np.array(runs["cse"]["case_mean_dice"]) - np.array(runs["supervised-k"]["case_mean_dice"])
    assert report["comparisons"]["cse - supervised-k"]["mean"] == pytest.approx(diff.mean())
    markdown = (out / "cse_gain.md").read_text(encoding="utf-8")
    assert "SMOKE RUN" in markdown and "| supervised-all |" in markdown
    # the upper bound trained on the held-aside labels: its card lists the unlabelled cases as labelled
    from lightunetr_core.bundle import read_model_card

    card = read_model_card(runs["supervised-all"]["bundle"])
    assert card.provenance["labeled_cases"] == 4 and card.provenance["unlabeled_cases"] == 0
