"""The GPU suite's CPU dry run (tiny sizes, the same code up to the device calls), so the suite that a GPU
session runs once cannot rot between those sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"


def test_dry_run_runs_every_section_and_passes_its_checks(tmp_path):
    proc = subprocess.run([sys.executable, str(SUITE), "--dry-run", "--out", str(tmp_path / "out")],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=900, cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "gpu_suite.json").read_text(encoding="utf-8"))
    errors = {name: s["error"][-1500:] for name, s in report["sections"].items() if s.get("error")}
    assert not errors, errors
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["dry_run"] and set(report["sections"]) == {
        "inference", "whole_volume", "cse_step", "resume", "train_cli", "oom", "catalog"}
    checks = {f"{n}: {c}": ok for n, s in report["sections"].items() for c, ok in s["checks"].items()}
    assert len(checks) >= 8 and all(checks.values()), checks
    figures = report["sections"]["whole_volume"]["figures"]
    assert figures["whole_volume_s"] > 0 and {"read_s", "inference_s", "write_s"} <= set(figures)
    markdown = (tmp_path / "out" / "gpu_suite.md").read_text(encoding="utf-8")
    assert "DRY RUN" in markdown and "| whole_volume_s |" in markdown
    assert subprocess.run(["bash", "-n", str(SUITE.with_suffix(".sh"))]).returncode == 0  # the launcher parses


def test_a_failed_check_is_reported_and_fails_the_suite(tmp_path, monkeypatch):
    """One section whose check fails: the table says FAIL and the exit status is 1."""
    sys.path.insert(0, str(SUITE.parent))
    import gpu_suite

    monkeypatch.setitem(gpu_suite.SECTIONS, "resume",
                        lambda device, size, work, opts: {"figures": {}, "checks": {"resume equals the run": False}})
    code = gpu_suite.main(["--dry-run", "--only", "resume", "--out", str(tmp_path)])
    assert code == 1
    assert "| resume: resume equals the run | FAIL |" in (tmp_path / "gpu_suite.md").read_text(encoding="utf-8")
