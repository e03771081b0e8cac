"""What a training run keeps in its run folder (events.jsonl, CSV logs, progress.png, TensorBoard) and the
human output of jobs that do not run on a terminal."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from lightunetr_core.training import runlog

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cli(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "lightunetr_core", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout, **kw)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from lightunetr_core.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), cases=6, labeled=2, validation=1, test=1,
                                 shape=(40, 40, 40))


def test_history_follows_the_run_across_a_resume():
    events = [
        {"event": "started", "start_iteration": 0},
        *({"event": "iteration", "iteration": i, "loss": {"total": 1.0 / i}, "lr": 0.1} for i in range(1, 6)),
        {"event": "validation", "iteration": 4, "dice": 0.5, "per_class": {"1": 0.5}},
        # crash after iteration 5; the checkpoint was at iteration 4: the resumed run redoes 5
        {"event": "started", "start_iteration": 4},
        {"event": "iteration", "iteration": 5, "loss": {"total": 0.3}, "lr": 0.05},
        {"event": "iteration", "iteration": 6, "loss": {"total": 0.2}, "lr": 0.04},
    ]
    iterations, validations = runlog.history(events)
    assert [r["iteration"] for r in iterations] == [1, 2, 3, 4, 5, 6]
    assert iterations[4]["total"] == 0.3 and iterations[4]["lr"] == 0.05  # the redone iteration wins
    assert validations == [{"iteration": 4, "dice": 0.5, "dice_1": 0.5}]


def test_a_line_cut_by_a_crash_is_skipped_and_damage_elsewhere_is_refused(tmp_path):
    good = json.dumps({"event": "iteration", "iteration": 1, "loss": {"total": 1.0}, "lr": 0.1})
    (tmp_path / runlog.EVENTS_FILE).write_text(good + "\n" + good[:20])
    assert len(runlog.read_events(tmp_path)) == 1
    (tmp_path / runlog.EVENTS_FILE).write_text(good[:20] + "\n" + good + "\n")
    with pytest.raises(runlog.RunLogError, match="line 1"):
        runlog.read_events(tmp_path)
    with pytest.raises(runlog.RunLogError, match="not found"):
        runlog.read_events(tmp_path / "nothing")


def test_run_folder_keeps_events_logs_and_figure_across_a_resume(demo_data, tmp_path):
    run = tmp_path / "run"
    common = ["train", "--data", demo_data, "-o", run, "--recipe", "supervised", "--patch-size", "32", "32", "32",
              "--iterations", "4", "--val-every", "2", "--device", "cpu", "--threads", "1", "--events", "json",
              "--warmup", "500"]  # every logged lr is then > 0 (a run's last step sets the next lr to 0 otherwise)
    first = _cli(*common, "--stop-after", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    # the events file holds what stdout had, plus one record per iteration
    kept = runlog.read_events(run)
    stdout = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert [e for e in kept if e["event"] != "iteration"] == stdout
    assert [e["iteration"] for e in kept if e["event"] == "iteration"] == [1, 2, 3]
    assert [int(r["iteration"]) for r in _rows(run / runlog.TRAINING_LOG)] == [1, 2, 3]
    second = _cli(*common, "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    kept = runlog.read_events(run)
    assert [e["start_iteration"] for e in kept if e["event"] == "started"] == [0, 3], "resume did not append"
    rows = _rows(run / runlog.TRAINING_LOG)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert {"lr", "total", "ce", "dice"} <= set(rows[0]) and all(float(r["lr"]) > 0 for r in rows)
    validations = _rows(run / runlog.VALIDATION_LOG)
    assert [int(r["iteration"]) for r in validations] == [2, 4] and "dice_1" in validations[0]
    png = (run / runlog.PROGRESS_FIGURE).read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    # the card says what made it
    from lightunetr_core.bundle import read_model_card

    bundle = next(run.glob("*.lightunetr"))
    provenance = read_model_card(bundle).provenance
    import monai
    import torch

    assert provenance["torch"] == torch.__version__ and provenance["monai"] == monai.__version__
    assert provenance["cases"]["labeled"] and provenance["cases"]["validation"]
    assert provenance["command_line"][1:3] == ["train", "--data"] and "--resume" in provenance["command_line"]

    # lightunetr plot redraws everything from events.jsonl
    for name in (runlog.TRAINING_LOG, runlog.VALIDATION_LOG, runlog.PROGRESS_FIGURE):
        (run / name).unlink()
    plot = _cli("plot", run)
    assert plot.returncode == 0, plot.stderr
    assert [int(r["iteration"]) for r in _rows(run / runlog.TRAINING_LOG)] == [1, 2, 3, 4]
    assert (run / runlog.PROGRESS_FIGURE).read_bytes().startswith(PNG_SIGNATURE)
    missing = _cli("plot", tmp_path / "no-run")
    assert missing.returncode == 2 and "events.jsonl" in missing.stderr


def test_tensorboard_scalars(demo_data, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    proc = _cli("train", "--data", demo_data, "-o", run, "--recipe", "supervised", "--patch-size", "32",
                "--iterations", "2", "--val-every", "2", "--device", "cpu", "--threads", "1", "--tensorboard")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/total", "learning_rate", "validation/dice"} <= tags, tags
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2]


def test_tensorboard_missing_is_a_clear_bad_input(demo_data, tmp_path):
    code = ("import sys; sys.modules['torch.utils.tensorboard'] = None; from lightunetr_core.cli import main; "
            f"sys.exit(main(['train', '--data', {str(demo_data)!r}, '-o', {str(tmp_path / 'r')!r}, '--patch-size', "
            "'32', '--tensorboard', '--events', 'json']))")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "pip install tensorboard" in proc.stdout
    assert not (tmp_path / "r").exists()


def test_human_output_off_a_terminal_is_timestamped_lines(demo_data, tmp_path):
    """A log file or a cluster job gets one timestamped line per event: no carriage returns, nothing cut."""
    proc = _cli("train", "--data", demo_data, "-o", tmp_path / "run", "--recipe", "supervised", "--patch-size", "32",
                "--iterations", "2", "--val-every", "0", "--device", "cpu", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "\r" not in proc.stderr
    stamped = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d train \w+: ", line)]
    assert len(stamped) >= 5 and any(" progress: 2/2 (100 %)" in line for line in stamped), lines[:20]
    finished = [line for line in stamped if " finished: " in line]
    assert finished and json.loads(finished[0].split(" finished: ", 1)[1])["iteration"] == 2  # whole JSON
