#!/usr/bin/env python
"""Does CSE pay off on this dataset? CSE against supervised training on the same labelled cases, at the same
iteration count and at the same compute, and against a fully supervised upper bound.

With a manifest whose cases have the roles labeled (k cases), unlabeled, validation and test:

* ``supervised-k``: supervised on the k labelled cases, ``--iterations`` iterations;
* ``cse``: CSE (``--recipe``, default cse-reference) on the same k plus the unlabelled cases, same iterations;
* ``supervised-k-compute``: supervised on the k cases given CSE's compute — its iterations are scaled by the
  measured time ratio of a CSE iteration to a supervised one (``--match time``, the default: CPU seconds of this
  process on a CPU, so that another program on a shared machine does not tilt it; wall-clock on a GPU) or by
  the ratio of samples through the network per iteration (``--match passes``), so a gain is not just more
  compute;
* ``supervised-all``: supervised on the labelled and the unlabelled cases, when the unlabelled cases' labels
  were kept aside in the manifest (``lightunetr demo-data --keep-unlabeled-labels``); training never reads
  them otherwise.

Every run has the same seed, patch, batch, optimiser, schedule rule, foreground sampling and validation
(TrainingRequest's defaults, or the options below); ``--init-bundle`` starts every run from one bundle (CSE
fine-tuning vs supervised fine-tuning). The test cases are segmented with each model (largest component per
class, the authors' test protocol); the report gives per-class and mean Dice and HD95, the fraction of the
supervised-k → supervised-all gap that CSE closes, and a paired bootstrap interval over the test cases for
CSE minus each supervised-k run. It writes ``cse_gain.json`` and ``cse_gain.md`` into ``--out``.

    python benchmarks/cse_gain.py --demo --out bench/cse-gain-demo               # synthetic demo data, CPU budget
    python benchmarks/cse_gain.py --demo anatomy --out bench/cse-gain-ct         # real anatomy (deformed CT)
    python benchmarks/cse_gain.py data/dataset.json --out bench/x --iterations 2000 --patch 96 96 96
    python benchmarks/cse_gain.py --demo --smoke --out /tmp/cse-gain               # a minute: the CI smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

RUNS = ("supervised-k", "cse", "supervised-k-compute", "supervised-all")
#: The generated-data configurations (``--demo synthetic|anatomy``): the CPU measurements in the README (18 and
#: 42 minutes on the 2-core machine), and the CI smoke run (synthetic, tiny).
DEMO = {
    "synthetic": {"cases": 16, "labeled": 4, "validation": 2, "test": 4, "shape": (64, 64, 40), "patch": (32, 32, 32),
                  "iterations": 500, "val_every": 100},
    "anatomy": {"cases": 16, "labeled": 4, "validation": 2, "test": 4, "patch": (32, 32, 32), "iterations": 1500,
                "val_every": 250},
    "smoke": {"cases": 7, "labeled": 2, "validation": 1, "test": 2, "shape": (48, 48, 24), "patch": (32, 32, 32),
              "iterations": 3, "val_every": 3},
}


def samples_per_iteration(recipe: str, batch_labeled: int, batch_unlabeled: int, lean: bool = False) -> int:
    """Samples through the network per iteration (forward passes × batch): the authors' CSE runs four passes
    (weak nl+nu, strong nl+nu with a zero half, no-grad nu, mixed nu); lean and cse-paper run three."""
    nl, nu = batch_labeled, batch_unlabeled
    if recipe == "supervised":
        return nl
    if recipe == "cse-reference" and not lean:
        return 2 * (nl + nu) + 2 * nu
    return (nl + nu) + 2 * nu


def passes_ratio(recipe: str, batch_labeled: int, batch_unlabeled: int, lean: bool = False) -> float:
    """Samples through the network of one ``recipe`` iteration per sample of a supervised one."""
    return (samples_per_iteration(recipe, batch_labeled, batch_unlabeled, lean)
            / samples_per_iteration("supervised", batch_labeled, batch_unlabeled))


def held_aside_manifest(manifest: Path, out: Path) -> Path | None:
    """A copy of ``manifest`` in which the unlabelled cases that carry a label are labelled cases (paths made
    absolute), or None when none carries one (or the manifest is not ours)."""
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        return None
    root = manifest.parent.resolve()
    moved = 0
    for case in data["cases"]:
        case["images"] = [str(root / p) for p in case["images"]]
        if case.get("label"):
            case["label"] = str(root / case["label"])
            if case.get("role") == "unlabeled":
                case["role"] = "labeled"
                moved += 1
    if not moved:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / "supervised_all_dataset.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def bootstrap_interval(differences: np.ndarray, reps: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of paired per-case differences, resampling the cases."""
    rng = np.random.default_rng(seed)
    n = len(differences)
    means = differences[rng.integers(0, n, size=(reps, n))].mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def train(name: str, request, log) -> dict:
    """One run; its time per iteration is the median gap between iteration records (validation excluded), in
    wall-clock seconds and in this process's CPU seconds (with one thread on a CPU, what another program on the
    machine does not change)."""
    from lightunetr_core.jobs import EventWriter
    from lightunetr_core.training.run import run_training

    log(f"[{name}] {request.recipe}, {request.iterations} iterations ...")
    events = EventWriter("train")  # no stream: the run folder's events.jsonl and the listener below
    wall: list[float] = []
    cpu: list[float] = []

    def on_event(record: dict) -> None:
        if record["event"] == "iteration":  # emitted on the training thread right after the step
            wall.append(time.perf_counter())
            cpu.append(time.process_time())

    events.add_listener(on_event)
    try:
        result = run_training(request, events)
    finally:
        events.close()
    summary = result.summary
    per_it = float(np.median(np.diff(wall))) if len(wall) > 1 else summary["train_elapsed_s"]
    cpu_per_it = float(np.median(np.diff(cpu))) if len(cpu) > 1 else per_it
    log(f"[{name}] done in {summary['train_elapsed_s']:.0f} s ({per_it * 1000:.0f} ms/iteration, "
        f"{cpu_per_it * 1000:.0f} ms CPU), best validation Dice {summary.get('best_dice')}")
    return {"bundle": str(result.bundle), "iterations": summary["iteration"], "train_s": summary["train_elapsed_s"],
            "s_per_iteration": per_it, "cpu_s_per_iteration": cpu_per_it,
            "best_validation_dice": summary.get("best_dice"), "recipe": request.recipe}


def run(args) -> dict:
    import torch

    from lightunetr_core.training.request import TrainingRequest

    out = Path(args.out)
    log = (lambda message: print(message, file=sys.stderr, flush=True))
    if args.score_only:  # the runs of an earlier call, scored again (e.g. after a change of post-processing)
        report = json.loads((out / "cse_gain.json").read_text(encoding="utf-8"))
        return score(report, out, args.bootstrap, log)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise SystemExit(f"{out} is not empty; choose a new --out or pass --overwrite")
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    schedule = DEMO["smoke" if args.smoke else (args.demo or "synthetic")]
    counts = {k: schedule[k] for k in ("cases", "labeled", "validation", "test")} if args.demo else {}
    if args.demo == "anatomy" and not args.smoke:
        from lightunetr_core.data.anatomy import generate_anatomy_dataset

        manifest = generate_anatomy_dataset(out / "data", seed=args.seed, keep_unlabeled_labels=True, **counts)
    elif args.demo:
        from lightunetr_core.data.demo import generate_demo_dataset

        manifest = generate_demo_dataset(out / "data", seed=args.seed, shape=schedule["shape"],
                                         keep_unlabeled_labels=True, **counts)
    else:
        manifest = Path(args.manifest)
    iterations = args.iterations or schedule["iterations"]
    patch = tuple(args.patch) if args.patch else schedule["patch"]
    common = dict(patch_size=patch, batch_labeled=args.batch[0], batch_unlabeled=args.batch[1], seed=args.seed,
                  device=args.device, threads=args.threads, val_every=min(args.val_every or schedule["val_every"],
                                                                          iterations),
                  init_bundle=args.init_bundle, cache_dir=str(out / "cache"), lean=args.lean,
                  pseudo_label_components=args.pseudo_label_components)

    def request(name: str, recipe: str, data: Path, its: int) -> TrainingRequest:
        return TrainingRequest(data=str(data), run_dir=str(out / "runs" / name), recipe=recipe, iterations=its,
                               name=name, **{**common, "lean": common["lean"] and recipe == "cse-reference"})

    runs: dict[str, dict] = {}
    runs["supervised-k"] = train("supervised-k", request("supervised-k", "supervised", manifest, iterations), log)
    runs["cse"] = train("cse", request("cse", args.recipe, manifest, iterations), log)
    if args.match == "time":  # CPU seconds on a CPU (other load does not count), wall-clock on a GPU
        key = "cpu_s_per_iteration" if str(args.device) == "cpu" else "s_per_iteration"
        ratio = runs["cse"][key] / runs["supervised-k"][key]
    else:
        ratio = passes_ratio(args.recipe, *args.batch, lean=args.lean)
    compute_its = max(iterations, round(iterations * ratio))
    runs["supervised-k-compute"] = train("supervised-k-compute",
                                         request("supervised-k-compute", "supervised", manifest, compute_its), log)
    runs["supervised-k-compute"]["compute_ratio"] = ratio
    everything = held_aside_manifest(manifest, out)
    if everything is not None:
        runs["supervised-all"] = train("supervised-all", request("supervised-all", "supervised", everything,
                                                                  iterations), log)
    else:
        log("the unlabelled cases carry no labels: no supervised-all upper bound")

    report = {
        "manifest": str(manifest), "demo": args.demo, "smoke": bool(args.smoke), "recipe": args.recipe,
        "pseudo_label_components": args.pseudo_label_components,
        "iterations": iterations, "patch": list(patch), "batch": list(args.batch), "seed": args.seed,
        "match": args.match, "device": args.device, "threads": args.threads, "init_bundle": args.init_bundle,
        "runs": runs,
        "lean": args.lean, "passes_ratio": passes_ratio(args.recipe, *args.batch, lean=args.lean),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
        "date": time.strftime("%Y-%m-%d"),
    }
    return score(report, out, args.bootstrap, log)


def score(report: dict, out: Path, bootstrap: int, log) -> dict:
    """Segment the test cases with every run's bundle and add the Dice / HD95 tables and the comparisons to
    ``report``; writes cse_gain.json and cse_gain.md into ``out``."""
    from lightunetr_core.cli.demo import evaluate_bundles

    log("segmenting the test cases ...")
    runs = report["runs"]
    manifest = report["manifest"]
    table = evaluate_bundles(manifest, {name: run["bundle"] for name, run in runs.items()}, out / "segmentations")
    classes = list(table["labels"])
    cases = table["cases"]
    for name, run_ in runs.items():
        dice = np.array([[row["dice"][name][c] for c in classes] for row in cases])
        hd95 = np.array([[np.nan if row["hd95_mm"][name][c] is None else row["hd95_mm"][name][c] for c in classes]
                         for row in cases], dtype=float)
        run_["dice"] = {table["labels"][c]: float(dice[:, i].mean()) for i, c in enumerate(classes)}
        run_["mean_dice"] = float(dice.mean())
        run_["hd95_mm"] = {table["labels"][c]: (float(np.nanmean(hd95[:, i])) if np.isfinite(hd95[:, i]).any()
                                                else None) for i, c in enumerate(classes)}
        run_["case_mean_dice"] = dice.mean(axis=1).tolist()

    comparisons = {}
    cse = np.array(runs["cse"]["case_mean_dice"])
    for base in ("supervised-k", "supervised-k-compute"):
        diff = cse - np.array(runs[base]["case_mean_dice"])
        lo, hi = bootstrap_interval(diff, bootstrap, report["seed"])
        comparisons[f"cse - {base}"] = {"mean": float(diff.mean()), "ci95": [lo, hi]}
    gap = None
    if "supervised-all" in runs:
        span = runs["supervised-all"]["mean_dice"] - runs["supervised-k"]["mean_dice"]
        gap = ((runs["cse"]["mean_dice"] - runs["supervised-k"]["mean_dice"]) / span) if span > 0.01 else None
    report.update({"test_cases": [row["id"] for row in cases], "classes": [table["labels"][c] for c in classes],
                   "comparisons": comparisons, "gap_closed": gap,
                   "scoring": "largest connected component of the classes each card names as one structure"})
    (out / "cse_gain.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "cse_gain.md").write_text(markdown(report), encoding="utf-8")
    return report


def markdown(report: dict) -> str:
    classes = report["classes"]
    lines = [f"CSE gain: {Path(report['manifest']).parent.name}, {len(report['test_cases'])} test cases, patch "
             f"{'×'.join(map(str, report['patch']))}, batch {report['batch'][0]} + {report['batch'][1]}, seed "
             f"{report['seed']}, {report['device']}" + (" (SMOKE RUN: not a measurement)" if report["smoke"] else ""),
             "",
             "| run | iterations | train s | mean Dice | " + " | ".join(f"Dice {c}" for c in classes)
             + " | " + " | ".join(f"HD95 {c} mm" for c in classes) + " |",
             "|---" * (4 + 2 * len(classes)) + "|"]
    for name, run in report["runs"].items():
        hd = [("n/a" if run["hd95_mm"][c] is None else f"{run['hd95_mm'][c]:.1f}") for c in classes]
        lines.append(f"| {name} | {run['iterations']} | {run['train_s']:.0f} | {run['mean_dice']:.3f} | "
                     + " | ".join(f"{run['dice'][c]:.3f}" for c in classes) + " | " + " | ".join(hd) + " |")
    lines.append("")
    for name, c in report["comparisons"].items():
        lines.append(f"- {name}: {c['mean']:+.3f} mean Dice (95 % bootstrap interval {c['ci95'][0]:+.3f} … "
                     f"{c['ci95'][1]:+.3f})")
    ratio = report["runs"]["supervised-k-compute"].get("compute_ratio")
    lines.append(f"- supervised-k-compute had {ratio:.2f}× the iterations ({report['match']} match; samples through "
                 f"the network: {report['passes_ratio']:.1f}×)")
    if report["gap_closed"] is not None:
        lines.append(f"- CSE closes {100 * report['gap_closed']:.0f} % of the supervised-k → supervised-all gap")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", nargs="?", help="dataset manifest with labeled / unlabeled / validation / test roles")
    p.add_argument("--demo", nargs="?", const="synthetic", choices=["synthetic", "anatomy"], default=None,
                   help="generate the data (unlabelled cases' labels kept aside): synthetic (the demo task, default) or "
                        "anatomy (deformed copies of a real abdominal CT: lightunetr demo-data --source anatomy)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (the CI smoke run; not a measurement)")
    p.add_argument("--out", required=True, help="output folder (runs/, segmentations/, cse_gain.json, cse_gain.md)")
    p.add_argument("--recipe", default="cse-reference", choices=["cse-reference", "cse-paper"])
    p.add_argument("--lean", action="store_true", help="cse-reference in three passes")
    p.add_argument("--pseudo-label-components", choices=["auto", "largest", "all"], default="auto",
                   help="lightunetr train's option for every run (only CSE uses it)")
    p.add_argument("--iterations", type=int, default=None, help="iterations of supervised-k, cse and supervised-all")
    p.add_argument("--patch", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    p.add_argument("--batch", type=int, nargs=2, default=(2, 2), metavar=("LABELED", "UNLABELED"))
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--match", choices=["time", "passes"], default="time",
                   help="how supervised-k-compute's iterations are matched to CSE's compute: time (measured time per "
                        "iteration: this process's CPU time on a CPU, wall-clock on a GPU) or passes (samples through "
                        "the network)")
    p.add_argument("--init-bundle", default=None, help="fine-tune every run from this bundle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--score-only", action="store_true",
                   help="segment and score the test cases again with the bundles of an earlier call in --out")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the test cases")
    args = p.parse_args(argv)
    if not args.demo and not args.manifest and not args.score_only:
        p.error("give a MANIFEST or --demo")
    report = run(args)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
