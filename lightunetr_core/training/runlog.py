"""What a training run did, kept in its run folder: the event stream, the training log as CSV, and the
progress figure (in the manner of nnU-Net's ``progress.png``).

``events.jsonl`` holds every event of the run in order (:meth:`EventWriter.keep_in`), appended as it
happens and across resumes, including one ``iteration`` record per training iteration. Everything else is
derived from it by :func:`write_run_report` — at each validation, at the end, when the run stops, and by
``lightunetr plot RUN_DIR``:

``training_log.csv``    one row per iteration: iteration, time, lr, every loss term
``validation_log.csv``  one row per validation: iteration, mean Dice, Dice per class
``progress.png``        loss terms, learning rate and validation Dice against the iteration

A resumed run repeats the iterations after its checkpoint; a ``started`` event with ``start_iteration`` s
drops the records of iterations after s that came before it, so the log shows the run as it really went.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lightunetr_core.atomic import atomic_output
from lightunetr_core.jobs.events import parse_event
from lightunetr_core.vocabulary import InputError

EVENTS_FILE = "events.jsonl"
TRAINING_LOG = "training_log.csv"
VALIDATION_LOG = "validation_log.csv"
PROGRESS_FIGURE = "progress.png"


class RunLogError(InputError):
    """The run folder has no readable event log; the message says what to do."""


def read_events(run_dir: str | Path) -> list[dict]:
    """The events of ``run_dir/events.jsonl``; a last line cut by a crash is skipped."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.is_file():
        raise RunLogError(f"{path} not found: give the folder of a run made by 'lightunetr train' (it writes "
                          f"{EVENTS_FILE} there).")
    events = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        record = parse_event(line)
        if record is not None:
            events.append(record)
        elif n != len(lines) - 1:  # a run that was killed may leave its last line half-written
            raise RunLogError(f"{path}: line {n + 1} is not a JSON event; the file was edited or damaged.")
    return events


def history(events: list[dict]) -> tuple[list[dict], list[dict]]:
    """(iterations, validations): rows in iteration order as the run really went (see the module doc)."""
    iterations: dict[int, dict] = {}
    validations: dict[int, dict] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "started" and ev.get("start_iteration") is not None:
            start = int(ev["start_iteration"])
            iterations = {k: v for k, v in iterations.items() if k <= start}
            validations = {k: v for k, v in validations.items() if k <= start}
        elif kind == "iteration" and ev.get("iteration") is not None:
            iterations[int(ev["iteration"])] = {"iteration": int(ev["iteration"]), "time": ev.get("time"),
                                                "lr": ev.get("lr"), **(ev.get("loss") or {})}
        elif kind == "validation" and ev.get("iteration") is not None:
            per_class = {f"dice_{k}": v for k, v in (ev.get("per_class") or {}).items()}
            validations[int(ev["iteration"])] = {"iteration": int(ev["iteration"]), "dice": ev.get("dice"), **per_class}
    return [iterations[k] for k in sorted(iterations)], [validations[k] for k in sorted(validations)]


def _csv_text(rows: list[dict], first: list[str]) -> str:
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def _finite(values):
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else float("nan") for v in values]


def draw_progress(iterations: list[dict], validations: list[dict], path: Path, title: str = "") -> None:
    """The progress figure: loss terms (log scale), learning rate, validation Dice (mean and per class)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True, constrained_layout=True)
    its = [r["iteration"] for r in iterations]
    terms = [k for k in (iterations[0] if iterations else {}) if k not in ("iteration", "time", "lr")]
    for term in terms:
        ys = _finite([r.get(term) for r in iterations])
        axes[0].plot(its, ys, label=term, linewidth=1.2 if term == "total" else 0.8)
    axes[0].set_ylabel("loss")
    if any(isinstance(r.get(t), (int, float)) and r[t] > 0 for r in iterations for t in terms):
        axes[0].set_yscale("log")
    if terms:
        axes[0].legend(loc="upper right", fontsize=8)
    axes[1].plot(its, _finite([r.get("lr") for r in iterations]), color="tab:gray")
    axes[1].set_ylabel("learning rate")
    v_its = [r["iteration"] for r in validations]
    if validations:
        axes[2].plot(v_its, _finite([r.get("dice") for r in validations]), "o-", color="black", label="mean")
        for key in [k for k in validations[0] if k.startswith("dice_")]:
            axes[2].plot(v_its, _finite([r.get(key) for r in validations]), ".--", label=key[5:])
        axes[2].legend(loc="lower right", fontsize=8)
    else:
        axes[2].text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set_ylabel("validation Dice")
    axes[2].set_xlabel("iteration")
    axes[2].set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_output(path, "wb") as f:
        f.write(buffer.getvalue())


def write_run_report(run_dir: str | Path) -> dict:
    """(Re)write the CSV logs and the progress figure of ``run_dir`` from its ``events.jsonl``. Returns
    {"training_log", "validation_log", "progress", "iterations", "validations"}."""
    run_dir = Path(run_dir)
    events = read_events(run_dir)
    iterations, validations = history(events)
    with atomic_output(run_dir / TRAINING_LOG, "w") as f:
        f.write(_csv_text(iterations, ["iteration", "time", "lr"]))
    with atomic_output(run_dir / VALIDATION_LOG, "w") as f:
        f.write(_csv_text(validations, ["iteration", "dice"]))
    started = next((e for e in events if e.get("event") == "started"), {})
    recipe = (started.get("config") or {}).get("recipe") if isinstance(started.get("config"), dict) else None
    draw_progress(iterations, validations, run_dir / PROGRESS_FIGURE, title=f"{run_dir.name}" + (f" ({recipe})" if recipe else ""))
    return {"training_log": run_dir / TRAINING_LOG, "validation_log": run_dir / VALIDATION_LOG,
            "progress": run_dir / PROGRESS_FIGURE, "iterations": len(iterations), "validations": len(validations)}
