"""``lightunetr demo-data`` (write the synthetic demo dataset) and ``lightunetr demo`` (end-to-end demo).

``lightunetr demo OUT_DIR`` generates the demo data, trains CSE and a supervised-only baseline on the
same labelled cases, segments the held-out test cases with both bundles and prints a Dice table.
"""

from __future__ import annotations

import argparse


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", choices=["human", "json"], default="human", help="progress output: human (stderr) or JSON lines (stdout)")
    parser.add_argument("--cancel-file", default=None, help="stop cleanly when this file appears")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo-data",
        help="write a small synthetic 3-D segmentation dataset (manifest + NIfTI/NRRD files)",
        description="Write a synthetic organ-vs-distractor dataset that a global threshold cannot solve: "
        "labelled, unlabelled, validation and test cases plus a dataset.json manifest.",
    )
    p.add_argument("out_dir", help="output folder (must not exist or be empty)")
    p.add_argument("--cases", type=int, default=16, help="total number of cases (default 16)")
    p.add_argument("--labeled", type=int, default=4, help="labelled training cases (default 4)")
    p.add_argument("--validation", type=int, default=None, help="validation cases (default 2, or 1 below 8 cases)")
    p.add_argument("--test", type=int, default=None, help="held-out test cases (default cases // 4)")
    p.add_argument("--classes", type=int, choices=[1, 2], default=1, help="foreground classes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    _add_job_options(p)
    p.set_defaults(func=run_demo_data)

    d = subparsers.add_parser(
        "demo",
        help="end-to-end demo: synthetic data, CSE vs supervised training, test-set Dice table",
        description="Generate the demo data, train CSE (reference recipe) and a supervised-only baseline on the "
        "same labelled cases, segment the held-out test cases with both and print/write a Dice table.",
    )
    d.add_argument("out_dir", help="output folder (data/, runs/, segmentations/, dice.json)")
    d.add_argument("--iterations", type=int, default=None, help="training iterations per model (default 600; --quick: 12)")
    d.add_argument("--quick", action="store_true", help="tiny smoke-test schedule (about 2 minutes on 2 CPU cores)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    _add_job_options(d)
    d.set_defaults(func=run_demo)


def run_demo_data(args) -> int:
    from lightunetr_core.data.demo import generate_demo_dataset
    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_OK, EventWriter

    events = EventWriter.for_cli("demo-data", args.events)
    events.started(total=args.cases, config={k: v for k, v in vars(args).items() if k != "func"})
    try:
        manifest = generate_demo_dataset(
            args.out_dir,
            cases=args.cases,
            labeled=args.labeled,
            seed=args.seed,
            classes=args.classes,
            validation=args.validation,
            test=args.test,
            overwrite=args.overwrite,
            events=events,
        )
    except (ValueError, FileExistsError) as exc:
        events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    events.emit("output", path=str(manifest), kind="dataset")
    events.emit("finished", elapsed_s=None, manifest=str(manifest))
    if args.events == "human":
        print(manifest)
    return EXIT_OK


def run_demo(args) -> int:
    from lightunetr_core.jobs import EXIT_ERROR, EventWriter

    EventWriter.for_cli("demo", args.events).error("lightunetr demo is not implemented yet", kind="internal")
    return EXIT_ERROR
