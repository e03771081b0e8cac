"""``lightunetr plot RUN_DIR``: redraw a training run's progress figure and CSV logs from its events.jsonl."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="redraw progress.png and the CSV logs of a training run",
        description="Read RUN_DIR/events.jsonl (written by 'lightunetr train') and write training_log.csv, "
                    "validation_log.csv and progress.png (loss terms, learning rate, validation Dice per class). "
                    "Works on a running, stopped or crashed run. Exit codes: 0 ok, 2 no readable event log.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder of 'lightunetr train'")
    parser.set_defaults(func=run)


def run(args) -> int:
    from lightunetr_core.training.runlog import RunLogError, write_run_report

    try:
        report = write_run_report(args.run_dir)
    except RunLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key in ("progress", "training_log", "validation_log"):
        print(report[key])
    print(f"{report['iterations']} iteration(s), {report['validations']} validation(s)", file=sys.stderr)
    return 0
