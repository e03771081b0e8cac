"""``lightunetr train``: CSE semi-supervised (or supervised) training → a model bundle.

Run ``lightunetr train --help`` for the options; docs/training.md describes the recipes, the run folder
and the JSON events. Multi-process: ``torchrun --nproc_per_node N -m lightunetr_core train ...``.
"""

from __future__ import annotations

import argparse
from lightunetr_core.training.request import (
    DEFAULT_FOREGROUND_OVERSAMPLE, PSEUDO_LABEL_COMPONENTS, REFERENCE_WARMUP, TrainingRequest,
)
from lightunetr_core.vocabulary import ARCHITECTURES, InputError
from lightunetr_core.vocabulary import RECIPES as RECIPE_CHOICES  # CLI name → engine recipe


def parse_patch_size(values) -> tuple[tuple[int, int, int], bool]:
    """``--patch-size X Y Z`` (or one number for a cube) → (size, used the deprecated ``X,Y,Z`` form).
    ``X,Y,Z`` / ``XxYxZ`` in one word is still accepted (the form this option had before 0.2)."""
    words = [str(v) for v in values]
    old_form = len(words) == 1 and any(sep in words[0] for sep in (",", "x", "×"))
    if old_form:
        words = [w for w in words[0].replace("x", ",").replace("×", ",").split(",") if w.strip()]
    if len(words) == 1:
        words = words * 3
    if len(words) != 3:
        raise argparse.ArgumentTypeError(f"--patch-size takes X Y Z (e.g. 112 112 80) or one number, got {' '.join(map(str, values))!r}")
    try:
        return tuple(int(w) for w in words), old_form
    except ValueError:
        raise argparse.ArgumentTypeError(f"--patch-size must be integers, got {' '.join(map(str, values))!r}") from None


_DEFAULT = TrainingRequest(data="", run_dir="")


def register(subparsers) -> None:
    d = _DEFAULT
    p = subparsers.add_parser(
        "train",
        help="train Light-UNETR with CSE (semi-supervised) or supervised only; writes a model bundle",
        description="Train Light-UNETR / Light-UNETR-L on a dataset manifest or folder with the CSE recipe "
        "(reference = the authors' code, paper = the equations as printed) or supervised only. "
        "The run folder gets checkpoint.pt (resumable), best_model.pt and, at the end, a .lightunetr bundle.",
    )
    # Options without a default here take TrainingRequest's (lightunetr_core/training/request.py).
    p.add_argument("--data", required=True,
                   help="dataset manifest (dataset.json: ours, or a Medical Segmentation Decathlon / MONAI datalist with "
                        "training/validation/test lists) or dataset folder")
    p.add_argument("--fold", type=int, default=None,
                   help="with a datalist whose training entries have a \"fold\": validate on this fold, train on the others")
    p.add_argument("-o", "--output", required=True, dest="run_dir", help="run folder (created; must be new unless --resume)")
    p.add_argument("--recipe", choices=list(RECIPE_CHOICES), default=None,
                   help="cse-reference (default; released numbers), cse-paper, supervised")
    p.add_argument("--architecture", choices=list(ARCHITECTURES), default=None, help=f"default {d.architecture}")
    p.add_argument("--iterations", type=int, default=None, help=f"total iterations (default {d.iterations})")
    p.add_argument("--patch-size", nargs="+", default=None, metavar="N",
                   help="training patch X Y Z, multiples of 16 (default " + " ".join(map(str, d.patch_size))
                        + "; the old form 112,112,80 is still accepted)")
    p.add_argument("--batch-labeled", type=int, default=None, help=f"labelled crops per step (default {d.batch_labeled})")
    p.add_argument("--batch-unlabeled", type=int, default=None,
                   help=f"unlabelled crops per step (default {d.batch_unlabeled})")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None,
                   help="sgd (default; the reference: momentum 0.9, wd 1e-4) or adamw (betas 0.9/0.95, wd 0.005)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default 0.01 for sgd, 1e-3 for adamw)")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"linear warm-up iterations before the cosine decay (default: {REFERENCE_WARMUP}, the reference's, "
                        "but at most a tenth of --iterations)")
    p.add_argument("--val-every", type=int, default=None,
                   help=f"validate every N iterations (default {d.val_every}; 0: only at the end)")
    p.add_argument("--val-overlap", type=float, default=None,
                   help=f"window overlap of the validation that picks the best weights (default {d.val_overlap})")
    p.add_argument("--val-stride", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="window step in voxels for validation instead of --val-overlap (the authors validate LA with "
                        "18 18 4)")
    p.add_argument("--seed", type=int, default=None, help=f"default {d.seed}")
    p.add_argument("--device", default=None, help="auto (default: cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes")
    p.add_argument("--lean", action="store_true",
                   help="cse-reference with 3 passes (no zero-filled strong half, no redundant no-grad pass)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder from checkpoint.pt")
    p.add_argument("--stop-after", type=int, default=None, metavar="K",
                   help="stop after iteration K (checkpoint written; continue later with --resume)")
    p.add_argument("--init-bundle", default=None, help="start from the weights of this .lightunetr bundle")
    p.add_argument("--foreground-oversample", type=float, default=None,
                   help=f"fraction of labelled crops centred on foreground (default {DEFAULT_FOREGROUND_OVERSAMPLE} for "
                        "every recipe, so that comparisons differ only in the method; the authors' code: 0)")
    p.add_argument("--center-crop-unlabeled", action="store_true",
                   help="take unlabelled crops at the volume centre (the reference's BraTS setting)")
    p.add_argument("--pseudo-label-components", choices=list(PSEUDO_LABEL_COMPONENTS), default=None,
                   help="which classes of an AGR pseudo-label keep only their largest connected component: auto "
                        "(default: every class with two classes, as the reference; with more, the classes that are one "
                        "connected structure in the labelled cases), largest (every class), all (keep every part)")
    p.add_argument("--cache-dir", default=None, help="preprocessed-data cache (default RUN_DIR/cache)")
    p.add_argument("--name", default=None, help="bundle name (default: the dataset name)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars (losses, learning rate, validation Dice) to RUN_DIR/tensorboard "
                        "(needs: pip install tensorboard)")
    p.add_argument("--events", choices=["human", "json"], default="human",
                   help="progress output: human (stderr) or JSON lines (stdout)")
    p.add_argument("--cancel-file", default=None, help="stop cleanly (checkpoint, exit 3) when this file appears")
    p.set_defaults(func=run)


def request_from_args(args) -> tuple[TrainingRequest, bool]:
    """The request of a parsed command line, and whether it used the deprecated ``--patch-size X,Y,Z`` form."""
    old_form = False
    if args.patch_size is not None:
        try:
            args.patch_size, old_form = parse_patch_size(args.patch_size)
        except argparse.ArgumentTypeError as exc:
            raise InputError(str(exc)) from None
    return TrainingRequest.from_cli_args(args), old_form


def run(args) -> int:
    import os

    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelToken, EventWriter
    from lightunetr_core.training.run import run_training
    from lightunetr_core.training.trainer import TrainingCancelled

    events = EventWriter.for_cli("train", args.events)
    cancel = CancelToken(args.cancel_file)
    cancel.install_signal_handlers()
    is_main = int(os.environ.get("RANK", "0")) == 0  # torchrun: only rank 0 reports
    try:
        request, old_form = request_from_args(args)
        if old_form:
            events.log("--patch-size X,Y,Z is deprecated; write --patch-size "
                       + " ".join(str(p) for p in request.patch_size), level="warning")
        result = run_training(request, events, cancel)
        if is_main:
            if result.bundle is not None:
                events.emit("output", path=str(result.bundle), kind="bundle")
            events.emit("finished", elapsed_s=result.elapsed_s, bundle=str(result.bundle) if result.bundle else None,
                        **result.summary)
        return EXIT_OK
    except InputError as exc:  # the request, the run folder, the dataset, the starting bundle, memory
        if is_main:
            events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    except TrainingCancelled as exc:
        if is_main:
            events.emit("cancelled", message=str(exc), checkpoint=str(exc.checkpoint) if exc.checkpoint else None,
                        iteration=exc.iteration)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 — report, do not hide
        import traceback

        if is_main:
            events.error(f"{type(exc).__name__}: {exc}", kind="internal", traceback=traceback.format_exc()[-4000:])
        return EXIT_ERROR
    finally:
        events.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m lightunetr_core.cli.train ...`` — the same as ``lightunetr train ...``."""
    parser = argparse.ArgumentParser(prog="lightunetr")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *(argv if argv is not None else __import__("sys").argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    from lightunetr_core.cli import exit_process

    exit_process(main())
