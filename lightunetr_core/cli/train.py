"""``lightunetr train``: CSE semi-supervised (or supervised) training → a model bundle.

Run ``lightunetr train --help`` for the options; docs/training.md describes the recipes, the run folder
and the JSON events. Multi-process: ``torchrun --nproc_per_node N -m lightunetr_core train ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightunetr_core.vocabulary import RECIPES as RECIPE_CHOICES  # CLI name → engine recipe
from lightunetr_core.vocabulary import InputError


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


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train Light-UNETR with CSE (semi-supervised) or supervised only; writes a model bundle",
        description="Train Light-UNETR / Light-UNETR-L on a dataset manifest or folder with the CSE recipe "
        "(reference = the authors' code, paper = the equations as printed) or supervised only. "
        "The run folder gets checkpoint.pt (resumable), best_model.pt and, at the end, a .lightunetr bundle.",
    )
    p.add_argument("--data", required=True,
                   help="dataset manifest (dataset.json: ours, or a Medical Segmentation Decathlon / MONAI datalist with "
                        "training/validation/test lists) or dataset folder")
    p.add_argument("--fold", type=int, default=None,
                   help="with a datalist whose training entries have a \"fold\": validate on this fold, train on the others")
    p.add_argument("-o", "--output", required=True, dest="run_dir", help="run folder (created; must be new unless --resume)")
    p.add_argument("--recipe", choices=list(RECIPE_CHOICES), default="cse-reference",
                   help="cse-reference (default; released numbers), cse-paper, supervised")
    p.add_argument("--architecture", choices=["lightunetr", "lightunetr_large"], default="lightunetr")
    p.add_argument("--iterations", type=int, default=15000, help="total iterations (default 15000)")
    p.add_argument("--patch-size", nargs="+", default=["112", "112", "80"], metavar="N",
                   help="training patch X Y Z, multiples of 16 (default 112 112 80; the old form 112,112,80 is "
                        "still accepted)")
    p.add_argument("--batch-labeled", type=int, default=2, help="labelled crops per step (default 2)")
    p.add_argument("--batch-unlabeled", type=int, default=2, help="unlabelled crops per step (default 2)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                   help="sgd (reference: momentum 0.9, wd 1e-4) or adamw (betas 0.9/0.95, wd 0.005)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default 0.01 for sgd, 1e-3 for adamw)")
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up iterations before the cosine decay (default 500)")
    p.add_argument("--val-every", type=int, default=200, help="validate every N iterations (0: only at the end)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes")
    p.add_argument("--lean", action="store_true",
                   help="cse-reference with 3 passes (no zero-filled strong half, no redundant no-grad pass)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder from checkpoint.pt")
    p.add_argument("--stop-after", type=int, default=None, metavar="K",
                   help="stop after iteration K (checkpoint written; continue later with --resume)")
    p.add_argument("--init-bundle", default=None, help="start from the weights of this .lightunetr bundle")
    p.add_argument("--foreground-oversample", type=float, default=None,
                   help="fraction of labelled crops centred on foreground (default: 0 = uniform crops, as the "
                        "reference, for cse-reference; 0.33 for the other recipes)")
    p.add_argument("--center-crop-unlabeled", action="store_true",
                   help="take unlabelled crops at the volume centre (the reference's BraTS setting)")
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


class _BadInput(InputError):
    pass


def _check_args(args) -> None:
    from lightunetr_core.models import check_spatial_size

    problems = []
    try:
        check_spatial_size(args.patch_size)
    except ValueError as exc:
        problems.append(f"--patch-size: {exc}")
    if args.iterations < 1:
        problems.append("--iterations must be at least 1")
    if args.batch_labeled < 1:
        problems.append("--batch-labeled must be at least 1")
    if args.recipe != "supervised" and args.batch_unlabeled < 1:
        problems.append("--batch-unlabeled must be at least 1 for CSE (or use --recipe supervised)")
    if args.lean and args.recipe != "cse-reference":
        problems.append("--lean applies to --recipe cse-reference only")
    if args.stop_after is not None and args.stop_after < 1:
        problems.append("--stop-after must be at least 1")
    if args.val_every < 0:
        problems.append("--val-every must be ≥ 0")
    if args.lr is not None and not args.lr > 0:
        problems.append("--lr must be positive")
    if getattr(args, "tensorboard", False):
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            problems.append("--tensorboard needs the tensorboard package: pip install tensorboard")
    if not problems:
        import math

        # BatchNorm inside the bottleneck LIDR sees batch × Π ceil(axis/32) values; one value cannot train.
        tokens = math.prod(math.ceil(s / 32) for s in args.patch_size)
        passes = [args.batch_labeled] if args.recipe == "supervised" else [args.batch_unlabeled, args.batch_labeled + args.batch_unlabeled]
        if tokens == 1 and min(passes) == 1:
            problems.append(f"--patch-size {tuple(args.patch_size)} with a batch of 1: the network's bottleneck "
                            "BatchNorm would see a single value; use batches of at least 2 or a patch of at least 64 "
                            "voxels along one axis")
    if problems:
        raise _BadInput("; ".join(problems))


def _check_run_dir(run_dir, resume: bool) -> None:
    from lightunetr_core.training.trainer import CHECKPOINT_NAME

    if resume:
        if not (run_dir / CHECKPOINT_NAME).is_file():
            raise _BadInput(f"--resume: {run_dir / CHECKPOINT_NAME} not found; resume needs the folder of an earlier run "
                            "(drop --resume to start a new one)")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(p.name != "cache" for p in run_dir.iterdir())):
        raise _BadInput(f"run folder {run_dir} already exists and is not empty; choose a new folder or pass --resume "
                        "to continue the run in it")


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise _BadInput(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return name


def run(args) -> int:
    import shutil
    import time
    from pathlib import Path

    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelToken, EventWriter
    from lightunetr_core.training import distributed as ddp

    events = EventWriter.for_cli("train", args.events)
    cancel = CancelToken(args.cancel_file)
    cancel.install_signal_handlers()
    run_dir = Path(args.run_dir)
    # The top-most folder this run would create: removed again if the input is rejected.
    created_root = None
    for folder in [run_dir, *run_dir.absolute().parents]:
        if folder.exists():
            break
        created_root = folder
    info = ddp.DistInfo()
    t_start = time.monotonic()

    def bad(message: str) -> int:
        if info.is_main:
            events.error(message, kind="bad_input")
        events.close()
        if created_root is not None and created_root.exists() and info.is_main:
            shutil.rmtree(created_root, ignore_errors=True)  # never leave a half-made run folder
        return EXIT_BAD_INPUT

    try:
        try:
            args.patch_size, old_form = parse_patch_size(args.patch_size)
        except argparse.ArgumentTypeError as exc:
            raise _BadInput(str(exc)) from None
        if old_form:
            events.log("--patch-size X,Y,Z is deprecated; write --patch-size "
                       + " ".join(str(p) for p in args.patch_size), level="warning")
        _check_args(args)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        info = ddp.init_distributed(_resolve_device(args.device))
        device = _resolve_device(args.device)
        _check_run_dir(run_dir, args.resume)
        init_card = None
        if args.init_bundle:
            from lightunetr_core.bundle import BundleError, read_model_card

            try:
                init_card = read_model_card(args.init_bundle)
            except BundleError as exc:
                raise _BadInput(f"--init-bundle: {exc}") from None
        prepared = _prepare_data(args, run_dir, events, info, init_card)
    except _BadInput as exc:
        return bad(str(exc))
    except InputError as exc:  # DatasetError and friends: they name the problem and the fix
        return bad(str(exc))

    try:
        from lightunetr_core.training.recipes import RecipeConfig
        from lightunetr_core.training.trainer import (
            BadTrainingInput, TrainConfig, Trainer, TrainingCancelled,
        )

        arch_args = {"in_channels": prepared.in_channels, "num_classes": prepared.num_classes}
        if args.architecture == "lightunetr":
            arch_args["patch_size"] = list(args.patch_size)
        init_state = None
        if init_card is not None:
            init_state = _init_weights(args, init_card, arch_args)
        lr = args.lr if args.lr is not None else (0.01 if args.optimizer == "sgd" else 1e-3)
        config = TrainConfig(
            run_dir=run_dir,
            recipe=RecipeConfig(recipe=RECIPE_CHOICES[args.recipe], lean=args.lean, bf16=args.bf16),
            architecture=args.architecture, architecture_args=arch_args, patch_size=tuple(args.patch_size),
            iterations=args.iterations, batch_labeled=args.batch_labeled,
            batch_unlabeled=args.batch_unlabeled if args.recipe != "supervised" else 0,
            lr=lr, optimizer=args.optimizer, warmup=args.warmup, val_every=args.val_every, seed=args.seed,
            device=device, stop_after=args.stop_after, resume=args.resume, init_state=init_state,
        )
        data = _training_data(prepared, args)
        trainer = Trainer(config, data, events if info.is_main else None, cancel, info)
        board = _tensorboard(run_dir, events) if args.tensorboard and info.is_main else None
        try:
            summary = trainer.run()
        except BadTrainingInput as exc:
            return bad(str(exc))
        except TrainingCancelled as exc:
            if info.is_main:
                events.emit("cancelled", message=str(exc), checkpoint=str(exc.checkpoint) if exc.checkpoint else None,
                            iteration=exc.iteration)
            if not info.enabled:
                _fast_exit_if_cli(EXIT_CANCELLED)
            return EXIT_CANCELLED
        bundle_path = None
        if summary["status"] == "finished" and info.is_main:
            bundle_path = _write_bundle(args, prepared, trainer, config, summary)
            events.emit("output", path=str(bundle_path), kind="bundle")
        if info.is_main:
            events.emit("finished", elapsed_s=time.monotonic() - t_start, bundle=str(bundle_path) if bundle_path else None,
                        **summary)
        return EXIT_OK
    except _BadInput as exc:
        return bad(str(exc))
    except Exception as exc:  # noqa: BLE001 — report, do not hide
        import traceback

        if info.is_main:
            events.error(f"{type(exc).__name__}: {exc}", kind="internal", traceback=traceback.format_exc()[-4000:])
        return EXIT_ERROR
    finally:
        if "board" in locals() and board is not None:
            board.close()
        events.close()
        ddp.cleanup(info)


def _is_cli_process() -> bool:
    """True when this process was started as the ``lightunetr`` command (console script,
    ``python -m lightunetr_core`` or ``python -m lightunetr_core.cli.train``), not imported by a host."""
    import sys
    from pathlib import Path

    argv0 = Path(sys.argv[0] if sys.argv and sys.argv[0] else "")
    if argv0.name == "train.py" and argv0.parent.name == "cli" and argv0.parent.parent.name == "lightunetr_core":
        return True
    top = argv0.stem == "lightunetr" or (argv0.name == "__main__.py" and argv0.parent.name == "lightunetr_core")
    # Only for the train command itself (not, e.g., ``lightunetr demo`` calling run() in-process).
    return top and len(sys.argv) > 1 and sys.argv[1] == "train"


def _fast_exit_if_cli(code: int) -> None:
    """After a cancel, everything is on disk and the events are flushed: skip the interpreter's module
    teardown (seconds with torch + MONAI loaded on a busy machine) so the caller sees the exit code fast."""
    import os
    import sys

    if not _is_cli_process():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _prepare_data(args, run_dir, events, info, init_card=None):
    from pathlib import Path

    from lightunetr_core.data.cache import prepare_dataset
    from lightunetr_core.training import distributed as ddp

    if not Path(args.data).exists():
        raise _BadInput(f"--data {args.data}: no such manifest or folder")
    data = args.data if init_card is None else _spec_with_plan_of(args, init_card, events if info.is_main else None)
    cache_dir = Path(args.cache_dir) if args.cache_dir else run_dir / "cache"
    supervised = args.recipe == "supervised"
    kwargs = dict(
        labeled_batch_size=args.batch_labeled,
        unlabeled_batch_size=0 if supervised else args.batch_unlabeled,
        require_unlabeled=not supervised,
        fold=args.fold,
    )
    # Rank 0 preprocesses; the other ranks then read the cache.
    prepared = None
    error = None
    if info.is_main:
        try:
            prepared = prepare_dataset(data, cache_dir, events=events, **kwargs)
        except ValueError as exc:
            error = str(exc)
    error = ddp.broadcast_object(error, info)
    if error:
        raise _BadInput(error)
    if not info.is_main:
        prepared = prepare_dataset(data, cache_dir, **kwargs)
    return prepared


def _spec_with_plan_of(args, card, events):
    """The dataset with the starting model's preprocessing (spacing, normalisation): its weights were trained
    for it. A manifest that states its own ``preprocessing`` keeps it (a warning says that it differs)."""
    from lightunetr_core.data.manifest import load_dataset_spec

    spec = load_dataset_spec(args.data, args.fold)
    theirs = card.plan
    if spec.preprocessing:
        if events is not None and spec.preprocessing.get("target_spacing") not in (None, list(theirs.target_spacing or [])):
            events.log(f"the manifest's preprocessing {spec.preprocessing} is used; the starting model "
                       f"{card.name!r} was trained at {list(theirs.target_spacing or [])} mm", level="warning")
        return spec
    spec.preprocessing = {"target_spacing": list(theirs.target_spacing) if theirs.target_spacing else None,
                          "normalization": [n.to_dict() for n in theirs.normalization]}
    if events is not None:
        events.log(f"fine-tuning {card.name!r}: its preprocessing is used (spacing {spec.preprocessing['target_spacing']} "
                   f"mm, normalisation {', '.join(n.kind for n in theirs.normalization)})")
    return spec


def foreground_oversample(args) -> float:
    """The reference samples labelled crops uniformly; the other recipes oversample foreground."""
    if args.foreground_oversample is not None:
        return args.foreground_oversample
    return 0.0 if args.recipe == "cse-reference" else 0.33


def _training_data(prepared, args):
    from lightunetr_core.data.sampling import PatchSampler
    from lightunetr_core.training.trainer import TrainingData

    validation = [(case.image, case.label) for case in prepared.validation if case.label is not None]

    def make_sampler(generator):
        return PatchSampler(prepared, args.patch_size, generator,
                            foreground_oversample=foreground_oversample(args),
                            center_crop=bool(getattr(args, "center_crop_unlabeled", False)))

    return TrainingData(make_sampler=make_sampler, validation=validation, in_channels=prepared.in_channels,
                        num_classes=prepared.num_classes, labeled_count=len(prepared.labeled),
                        unlabeled_count=len(prepared.unlabeled))


def _init_weights(args, card, arch_args):
    from lightunetr_core.bundle import BundleError, load_bundle

    if card.architecture != args.architecture:
        raise _BadInput(f"--init-bundle is a {card.architecture} model but --architecture is {args.architecture}")
    theirs = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in card.architecture_args.items()}
    mismatch = {k: (theirs.get(k), v) for k, v in arch_args.items() if k in theirs and theirs[k] != v}
    if mismatch:
        raise _BadInput("--init-bundle does not fit this dataset/patch: "
                        + ", ".join(f"{k} is {a} in the bundle but {b} here" for k, (a, b) in mismatch.items())
                        + "; use a bundle trained with the same classes, channels and patch size")
    try:
        loaded = load_bundle(args.init_bundle)
    except BundleError as exc:
        raise _BadInput(f"--init-bundle: {exc}") from None
    return {k: v.detach().cpu() for k, v in loaded.model.state_dict().items()}


def _tensorboard(run_dir, events):
    """TensorBoard scalars fed by the job's events: losses and learning rate per iteration, Dice per validation."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def on_event(record: dict) -> None:
        if record["event"] == "iteration":
            step = record["iteration"]
            for term, value in (record.get("loss") or {}).items():
                if value is not None:
                    writer.add_scalar(f"loss/{term}", value, step)
            if record.get("lr") is not None:
                writer.add_scalar("learning_rate", record["lr"], step)
        elif record["event"] == "validation" and record.get("dice") is not None:
            writer.add_scalar("validation/dice", record["dice"], record["iteration"])
            for name, value in (record.get("per_class") or {}).items():
                if value is not None:
                    writer.add_scalar(f"validation/dice_{name}", value, record["iteration"])

    events.add_listener(on_event)
    return writer


def _write_bundle(args, prepared, trainer, config, summary):
    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.models import build_model

    state, source = trainer.final_state()
    model = build_model(config.architecture, **config.architecture_args)
    model.load_state_dict(state)
    names = [prepared.labels.get(i, f"class_{i}") for i in range(prepared.num_classes)]
    name = args.name or prepared.name or "model"
    card = ModelCard(
        name=name,
        architecture=config.architecture,
        architecture_args=dict(config.architecture_args),
        patch_size=list(config.patch_size),
        preprocessing=prepared.plan.to_dict(),
        input_channels=list(prepared.modalities),
        labels=default_labels(names),
        description=f"{config.architecture} trained with lightunetr train --recipe {args.recipe}",
        provenance={
            "recipe": args.recipe, "lean": bool(args.lean), "bf16": bool(args.bf16), "optimizer": config.optimizer,
            "labeled_cases": len(prepared.labeled), "unlabeled_cases": len(prepared.unlabeled),
            "validation_cases": len(prepared.validation), "iterations": summary["iteration"], "seed": config.seed,
            "weights": source, "best_validation_dice": summary.get("best_dice"),
            "best_iteration": summary.get("best_iteration"), "dataset": prepared.name,
            "source": "lightunetr train", **_environment_provenance(),
            "cases": {"labeled": [c.id for c in prepared.labeled], "unlabeled": [c.id for c in prepared.unlabeled],
                      "validation": [c.id for c in prepared.validation]},
        },
    )
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return save_bundle(config.run_dir / safe, model, card)


def _environment_provenance() -> dict:
    """Software versions and the command line of this run (recorded in the model card)."""
    import platform
    import sys

    import monai
    import torch

    from lightunetr_core import __version__

    return {"lightunetr_core": __version__, "torch": torch.__version__, "monai": monai.__version__,
            "python": platform.python_version(), "command_line": [Path(sys.argv[0]).name, *sys.argv[1:]]}


def main(argv: list[str] | None = None) -> int:
    """``python -m lightunetr_core.cli.train ...`` — the same as ``lightunetr train ...``."""
    parser = argparse.ArgumentParser(prog="lightunetr")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *(argv if argv is not None else __import__("sys").argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
