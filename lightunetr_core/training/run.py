"""One training run from a :class:`~lightunetr_core.training.request.TrainingRequest` to a model bundle:
``run_training(request) -> TrainingResult``.

The command line (``lightunetr train``), the demo, the benchmarks and the Slicer Training module's job (through
the command line) all train through this function:

1. check the request and the run folder;
2. describe → check → plan → cache the dataset (``data/cache.prepare_dataset``); when fine-tuning, with the
   starting bundle's preprocessing;
3. decide which classes' AGR pseudo-labels keep only their largest component (from the labelled cases);
4. run the :class:`~lightunetr_core.training.trainer.Trainer` (checkpoints, validation, events, cancel);
5. write the bundle (weights + model card with the run's provenance) into the run folder.

Bad input raises :class:`~lightunetr_core.vocabulary.InputError` before anything is trained, and a run folder
this call created is removed again; a cancel raises :class:`~lightunetr_core.training.trainer.TrainingCancelled`
after writing a resumable checkpoint.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lightunetr_core.jobs import CancelToken
from lightunetr_core.training import distributed as ddp
from lightunetr_core.training.request import TrainingRequest
from lightunetr_core.training.trainer import CHECKPOINT_NAME, BadTrainingInput, TrainConfig, Trainer
from lightunetr_core.vocabulary import InputError

__all__ = ["TrainingResult", "run_training"]


@dataclass
class TrainingResult:
    """``status``: ``finished`` (all iterations; ``bundle`` written on rank 0) or ``stopped`` (``stop_after``)."""

    status: str
    run_dir: Path
    bundle: Path | None
    summary: dict
    elapsed_s: float


def run_training(request: TrainingRequest, events=None, cancel: CancelToken | None = None) -> TrainingResult:
    """Train as ``request`` asks (see the module's docstring). ``events``: a
    :class:`~lightunetr_core.jobs.EventWriter` (rank 0 writes; ``None``: silent); ``cancel``: stops the run
    cleanly between (or inside) iterations. Under ``torchrun`` every rank calls this."""
    t_start = time.monotonic()
    request.check()
    run_dir = Path(request.run_dir)
    created_root = _first_missing_folder(run_dir)
    info = ddp.DistInfo()
    board = None
    try:
        if request.threads:
            torch.set_num_threads(request.threads)
        device = _training_device(request.device)
        info = ddp.init_distributed(device)
        _check_run_dir(run_dir, request.resume)
        events_here = events if info.is_main else None
        start = _load_initial_bundle(request)
        prepared = _prepare_data(request, run_dir, events_here, info, start.card if start else None)
        if start is not None:
            _check_fits(start.card, request, prepared)
        config = _train_config(request, prepared, device)
        if events_here is not None and request.engine_recipe != "supervised" and prepared.num_classes > 2:
            kept = config.recipe.largest_component_classes
            events_here.log("AGR pseudo-labels keep only the largest component of "
                            + (", ".join(prepared.labels.get(c, str(c)) for c in kept) if kept else "no class")
                            + f" (--pseudo-label-components {request.pseudo_label_components})")
        trainer = Trainer(config, _training_data(prepared, request), events_here, cancel, info,
                          initial_model=start.model if start is not None else None)
        if request.tensorboard and events_here is not None:
            board = _tensorboard(run_dir, events_here)
        summary = trainer.run()
        bundle = None
        if summary["status"] == "finished" and info.is_main:
            bundle = _write_bundle(request, prepared, trainer, summary)
        return TrainingResult(summary["status"], run_dir, bundle, summary, time.monotonic() - t_start)
    except InputError:
        # Never leave a half-made run folder; one with a checkpoint (e.g. out of memory after some
        # iterations) is kept for --resume.
        if (info.is_main and created_root is not None and created_root.exists()
                and not (run_dir / CHECKPOINT_NAME).is_file()):
            shutil.rmtree(created_root, ignore_errors=True)
        raise
    finally:
        if board is not None:
            board.close()
        ddp.cleanup(info)


# -- steps ----------------------------------------------------------------------------------------------------

def _first_missing_folder(run_dir: Path) -> Path | None:
    """The top-most folder this run would create (removed again if the input is rejected)."""
    created = None
    for folder in [run_dir, *run_dir.absolute().parents]:
        if folder.exists():
            break
        created = folder
    return created


def _training_device(name: str) -> str:
    """``auto``: CUDA when available, else the CPU (training does not pick Apple MPS by itself)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadTrainingInput(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return name


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if resume:
        if not (run_dir / CHECKPOINT_NAME).is_file():
            raise BadTrainingInput(f"--resume: {run_dir / CHECKPOINT_NAME} not found; resume needs the folder of an "
                                   "earlier run (drop --resume to start a new one)")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(p.name != "cache" for p in run_dir.iterdir())):
        raise BadTrainingInput(f"run folder {run_dir} already exists and is not empty; choose a new folder or pass "
                               "--resume to continue the run in it")


def _load_initial_bundle(request: TrainingRequest):
    """The starting bundle, loaded and verified once (its network is the one trained)."""
    if not request.init_bundle:
        return None
    from lightunetr_core.bundle import BundleError, load_bundle

    try:
        start = load_bundle(request.init_bundle)
    except BundleError as exc:
        raise BadTrainingInput(f"--init-bundle: {exc}") from None
    if start.card.architecture != request.architecture:
        raise BadTrainingInput(f"--init-bundle is a {start.card.architecture} model but --architecture is "
                               f"{request.architecture}")
    return start


def _check_fits(card, request: TrainingRequest, prepared) -> None:
    from lightunetr_core.models import model_args

    mine = model_args(request.architecture, prepared.in_channels, prepared.num_classes, request.patch_size)
    theirs = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in card.architecture_args.items()}
    mismatch = {k: (theirs.get(k), v) for k, v in mine.items() if k in theirs and theirs[k] != v}
    if mismatch:
        raise BadTrainingInput("--init-bundle does not fit this dataset/patch: "
                               + ", ".join(f"{k} is {a} in the bundle but {b} here" for k, (a, b) in mismatch.items())
                               + "; use a bundle trained with the same classes, channels and patch size")


def _prepare_data(request: TrainingRequest, run_dir: Path, events, info, init_card=None):
    from lightunetr_core.data.cache import prepare_dataset

    if not Path(request.data).exists():
        raise BadTrainingInput(f"--data {request.data}: no such manifest or folder")
    data = request.data if init_card is None else _spec_with_plan_of(request, init_card, events)
    cache_dir = Path(request.cache_dir) if request.cache_dir else run_dir / "cache"
    kwargs = dict(labeled_batch_size=request.batch_labeled, unlabeled_batch_size=request.effective_batch_unlabeled,
                  require_unlabeled=not request.supervised, fold=request.fold)
    # Rank 0 preprocesses; the other ranks then read the cache.
    prepared = None
    error = None
    if info.is_main:
        try:
            prepared = prepare_dataset(data, cache_dir, events=events, **kwargs)
        except InputError as exc:
            error = str(exc)
    error = ddp.broadcast_object(error, info)
    if error:
        raise BadTrainingInput(error)
    if not info.is_main:
        prepared = prepare_dataset(data, cache_dir, **kwargs)
    return prepared


def _spec_with_plan_of(request: TrainingRequest, card, events):
    """The dataset with the starting model's preprocessing (spacing, normalisation): its weights were trained
    for it. A manifest that states its own ``preprocessing`` keeps it (a warning says that it differs)."""
    from lightunetr_core.data.manifest import load_dataset_spec

    spec = load_dataset_spec(request.data, request.fold)
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


def _train_config(request: TrainingRequest, prepared, device: str) -> TrainConfig:
    from lightunetr_core.training.pseudo_labels import largest_component_classes
    from lightunetr_core.training.recipes import RecipeConfig

    largest = largest_component_classes(request.pseudo_label_components, prepared.num_classes,
                                        (case.label for case in prepared.labeled))
    recipe = RecipeConfig(recipe=request.engine_recipe, lean=request.lean, bf16=request.bf16,
                          largest_component_classes=largest)
    return TrainConfig(
        run_dir=Path(request.run_dir), recipe=recipe, architecture=request.architecture,
        in_channels=prepared.in_channels, num_classes=prepared.num_classes, patch_size=request.patch_size,
        iterations=request.iterations, batch_labeled=request.batch_labeled,
        batch_unlabeled=request.effective_batch_unlabeled, lr=request.effective_lr, optimizer=request.optimizer,
        warmup=request.effective_warmup, val_every=request.val_every, seed=request.seed, device=device,
        stop_after=request.stop_after, resume=request.resume, sw_overlap=request.validation_overlap,
    )


def _training_data(prepared, request: TrainingRequest):
    from lightunetr_core.data.sampling import PatchSampler
    from lightunetr_core.training.trainer import TrainingData

    validation = [(case.image, case.label) for case in prepared.validation if case.label is not None]

    def make_sampler(generator):
        return PatchSampler(prepared, request.patch_size, generator,
                            foreground_oversample=request.effective_foreground_oversample,
                            center_crop=request.center_crop_unlabeled)

    return TrainingData(make_sampler=make_sampler, validation=validation, in_channels=prepared.in_channels,
                        num_classes=prepared.num_classes, labeled_count=len(prepared.labeled),
                        unlabeled_count=len(prepared.unlabeled))


def _write_bundle(request: TrainingRequest, prepared, trainer: Trainer, summary: dict) -> Path:
    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.models import build_model

    config = trainer.config
    state, source = trainer.final_state()
    model = build_model(config.architecture, **config.model_args)
    model.load_state_dict(state)
    names = [prepared.labels.get(i, f"class_{i}") for i in range(prepared.num_classes)]
    name = request.name or prepared.name or "model"
    card = ModelCard(
        name=name,
        architecture=config.architecture,
        architecture_args=config.model_args,
        patch_size=list(config.patch_size),
        preprocessing=prepared.plan.to_dict(),
        input_channels=list(prepared.modalities),
        labels=default_labels(names),
        description=f"{config.architecture} trained with lightunetr train --recipe {request.recipe}",
        provenance={
            "recipe": request.recipe, "lean": request.lean, "bf16": request.bf16, "optimizer": config.optimizer,
            "labeled_cases": len(prepared.labeled), "unlabeled_cases": len(prepared.unlabeled),
            "validation_cases": len(prepared.validation), "iterations": summary["iteration"], "seed": config.seed,
            "warmup": config.warmup, "foreground_oversample": request.effective_foreground_oversample,
            "pseudo_label_components": request.pseudo_label_components,
            "largest_component_classes": list(config.recipe.largest_component_classes or []),
            "initial_bundle": request.init_bundle,
            "weights": source, "best_validation_dice": summary.get("best_dice"),
            "best_iteration": summary.get("best_iteration"), "dataset": prepared.name,
            "source": "lightunetr train", **_environment_provenance(request),
            "cases": {"labeled": [c.id for c in prepared.labeled], "unlabeled": [c.id for c in prepared.unlabeled],
                      "validation": [c.id for c in prepared.validation]},
        },
    )
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return save_bundle(config.run_dir / safe, model, card)


def _tensorboard(run_dir: Path, events):
    """TensorBoard scalars fed by the job's events: losses and learning rate per iteration, Dice per validation."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

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


def _environment_provenance(request: TrainingRequest) -> dict:
    """Software versions and the command line that repeats this run (however it was started: the command, the
    demo, Slicer), recorded in the model card."""
    import platform

    import monai

    from lightunetr_core import __version__

    return {"lightunetr_core": __version__, "torch": torch.__version__, "monai": monai.__version__,
            "python": platform.python_version(), "command_line": ["lightunetr", "train", *request.to_cli_args()]}
