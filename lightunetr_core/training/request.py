"""What to train: one typed request for :func:`~lightunetr_core.training.run.run_training`, the
``lightunetr train`` command line, the demo, the benchmarks and the Slicer Training module's job.

Standard library only: the Slicer module builds a job's command line from it without importing torch.
The defaults here are the command line's defaults (``lightunetr train --help`` shows them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

from lightunetr_core import vocabulary
from lightunetr_core.vocabulary import InputError

__all__ = ["DEFAULT_FOREGROUND_OVERSAMPLE", "PSEUDO_LABEL_COMPONENTS", "REFERENCE_WARMUP", "TrainingRequest",
           "default_warmup"]

#: ``--pseudo-label-components``: which classes of an AGR pseudo-label keep only their largest connected
#: component. ``auto``: the reference's rule for two classes; with more, only the classes that are one
#: connected structure in the labelled cases (training/pseudo_labels.py decides).
PSEUDO_LABEL_COMPONENTS = ("auto", "largest", "all")
#: Fraction of labelled crops centred on foreground, the same for every recipe so that a CSE-vs-supervised
#: comparison differs in the method only (the authors' code samples uniformly: 0).
DEFAULT_FOREGROUND_OVERSAMPLE = 0.33
#: The authors' warm-up (code_cse/train_cse_withval.py) for their 15,000 iterations.
REFERENCE_WARMUP = 500


def default_warmup(iterations: int) -> int:
    """Linear warm-up length: the reference's 500 iterations, at most a tenth of the run (so that a short run
    spends most of its steps at or after the peak learning rate), at least 1."""
    return max(1, min(REFERENCE_WARMUP, int(iterations) // 10))


def _default_lr(optimizer: str) -> float:
    return 0.01 if optimizer == "sgd" else 1e-3


@dataclass(frozen=True)
class TrainingRequest:
    """One training run.

    Args:
        data: dataset manifest (``dataset.json``, ours or a Decathlon/MONAI datalist) or dataset folder.
        run_dir: run folder (created; must be new unless ``resume``).
        fold: with a datalist whose entries have a ``fold``: validate on it, train on the others.
        recipe: ``cse-reference``, ``cse-paper`` or ``supervised`` (the command line's names).
        architecture: ``lightunetr`` or ``lightunetr_large``.
        iterations: total iterations.
        patch_size: training crop X, Y, Z (multiples of 16).
        batch_labeled / batch_unlabeled: crops per step (unlabelled ones are not used by ``supervised``).
        optimizer: ``sgd`` (momentum 0.9, wd 1e-4, the reference) or ``adamw``.
        lr: base learning rate; ``None``: 0.01 for SGD, 1e-3 for AdamW.
        warmup: linear warm-up iterations before the cosine decay; ``None``: :func:`default_warmup`.
        val_every: validate every N iterations (0: only at the end).
        val_overlap: window overlap of the sliding-window validation that picks the best weights.
        val_stride: window step in voxels per axis for validation, instead of ``val_overlap`` (the authors
            validate with a dense stride: 18, 18, 4 on LA).
        seed: the run's seed (weights, sampling, views).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        bf16: bfloat16 autocast for the forward passes.
        lean: ``cse-reference`` in three passes instead of four.
        resume: continue the run in ``run_dir`` from its checkpoint.
        stop_after: stop after this iteration (checkpoint written).
        init_bundle: start from the weights of this bundle (its preprocessing is used too).
        foreground_oversample: fraction of labelled crops centred on foreground; ``None``:
            :data:`DEFAULT_FOREGROUND_OVERSAMPLE` for every recipe (the reference: 0).
        center_crop_unlabeled: unlabelled crops at the volume centre (the reference's BraTS setting).
        pseudo_label_components: see :data:`PSEUDO_LABEL_COMPONENTS`.
        cache_dir: preprocessed-data cache; ``None``: ``run_dir/cache``.
        name: bundle name; ``None``: the dataset's name.
        threads: torch CPU threads; ``None``: torch's choice.
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard``.
    """

    data: str
    run_dir: str
    fold: int | None = None
    recipe: str = "cse-reference"
    architecture: str = "lightunetr"
    iterations: int = 15000
    patch_size: tuple[int, int, int] = (112, 112, 80)
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    optimizer: str = "sgd"
    lr: float | None = None
    warmup: int | None = None
    val_every: int = 200
    val_overlap: float = 0.5
    val_stride: tuple[int, int, int] | None = None
    seed: int = 1337
    device: str = "auto"
    bf16: bool = False
    lean: bool = False
    resume: bool = False
    stop_after: int | None = None
    init_bundle: str | None = None
    foreground_oversample: float | None = None
    center_crop_unlabeled: bool = False
    pseudo_label_components: str = "auto"
    cache_dir: str | None = None
    name: str | None = None
    threads: int | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        # Plain strings and tuples, so that requests compare equal however they were made (argparse, JSON).
        for name in ("data", "run_dir", "init_bundle", "cache_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        for name in ("patch_size", "val_stride"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, name, tuple(int(v) for v in value))

    # -- derived settings (each default is decided here and nowhere else) -------------------------------
    @property
    def supervised(self) -> bool:
        return self.recipe == "supervised"

    @property
    def engine_recipe(self) -> str:
        """The training engine's recipe name (``reference``, ``paper``, ``supervised``)."""
        return vocabulary.RECIPES[self.recipe]

    @property
    def effective_lr(self) -> float:
        return float(self.lr) if self.lr is not None else _default_lr(self.optimizer)

    @property
    def effective_warmup(self) -> int:
        return int(self.warmup) if self.warmup is not None else default_warmup(self.iterations)

    @property
    def effective_foreground_oversample(self) -> float:
        return float(self.foreground_oversample) if self.foreground_oversample is not None else DEFAULT_FOREGROUND_OVERSAMPLE

    @property
    def effective_batch_unlabeled(self) -> int:
        return 0 if self.supervised else int(self.batch_unlabeled)

    @property
    def validation_overlap(self) -> float | tuple[float, float, float]:
        """The overlap MONAI's sliding window takes: one value, or one per axis from ``val_stride``."""
        if self.val_stride is None:
            return float(self.val_overlap)
        return tuple(1.0 - s / p for s, p in zip(self.val_stride, self.patch_size))

    def replace(self, **changes) -> "TrainingRequest":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("patch_size", "val_stride"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    # -- checks --------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What is wrong with the request, as sentences naming the option and the fix (empty: nothing). Needs the
        engine (it imports the network's size rule, and with it torch)."""
        from importlib import util

        problems = []
        if self.recipe not in vocabulary.RECIPES:
            problems.append(f"--recipe {self.recipe!r}: use one of {', '.join(vocabulary.RECIPES)}")
        if self.architecture not in vocabulary.ARCHITECTURES:
            problems.append(f"--architecture {self.architecture!r}: use one of {', '.join(vocabulary.ARCHITECTURES)}")
        if self.optimizer not in ("sgd", "adamw"):
            problems.append(f"--optimizer {self.optimizer!r}: use sgd or adamw")
        if self.pseudo_label_components not in PSEUDO_LABEL_COMPONENTS:
            problems.append(f"--pseudo-label-components {self.pseudo_label_components!r}: use one of "
                            f"{', '.join(PSEUDO_LABEL_COMPONENTS)}")
        from lightunetr_core.models.size_rules import check_spatial_size  # names the nearest valid sizes

        try:
            check_spatial_size(self.patch_size)
        except ValueError as exc:
            problems.append(f"--patch-size: {exc}")
        if self.iterations < 1:
            problems.append("--iterations must be at least 1")
        if self.batch_labeled < 1:
            problems.append("--batch-labeled must be at least 1")
        if not self.supervised and self.batch_unlabeled < 1:
            problems.append("--batch-unlabeled must be at least 1 for CSE (or use --recipe supervised)")
        if self.lean and self.recipe != "cse-reference":
            problems.append("--lean applies to --recipe cse-reference only")
        if self.stop_after is not None and self.stop_after < 1:
            problems.append("--stop-after must be at least 1")
        if self.val_every < 0:
            problems.append("--val-every must be ≥ 0")
        if not 0.0 <= self.val_overlap < 1.0:
            problems.append("--val-overlap must be in [0, 1)")
        if self.val_stride is not None and (len(self.val_stride) != 3 or any(
                not 0 < s <= p for s, p in zip(self.val_stride, self.patch_size))):
            problems.append(f"--val-stride {list(self.val_stride)}: three steps in voxels, each between 1 and the "
                            f"patch size {list(self.patch_size)}")
        if self.warmup is not None and self.warmup < 1:
            problems.append("--warmup must be at least 1")
        if self.lr is not None and not self.lr > 0:
            problems.append("--lr must be positive")
        if self.foreground_oversample is not None and not 0.0 <= self.foreground_oversample <= 1.0:
            problems.append("--foreground-oversample must be between 0 and 1")
        if self.threads is not None and self.threads < 1:
            problems.append("--threads must be at least 1")
        if self.tensorboard and util.find_spec("torch.utils.tensorboard") is None:
            problems.append("--tensorboard needs the tensorboard package: pip install tensorboard")
        if not problems:
            import math

            # BatchNorm inside the bottleneck LIDR sees batch × Π ceil(axis/32) values; one value cannot train.
            tokens = math.prod(math.ceil(s / 32) for s in self.patch_size)
            passes = [self.batch_labeled] if self.supervised else [self.batch_unlabeled,
                                                                    self.batch_labeled + self.batch_unlabeled]
            if tokens == 1 and min(passes) == 1:
                problems.append(f"--patch-size {self.patch_size} with a batch of 1: the network's bottleneck "
                                "BatchNorm would see a single value; use batches of at least 2 or a patch of at "
                                "least 64 voxels along one axis")
        return problems

    def check(self) -> None:
        """Raise :class:`InputError` naming every problem (see :meth:`problems`)."""
        problems = self.problems()
        if problems:
            raise InputError("; ".join(problems))

    # -- the command line ----------------------------------------------------------------------------
    def to_cli_args(self) -> list[str]:
        """The ``lightunetr train`` arguments that ask for this request (only the settings that differ from
        the defaults, plus the data and the run folder)."""
        default = TrainingRequest(data="", run_dir="")
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "resume" or (f.name not in ("data", "run_dir") and value == getattr(default, f.name)):
                continue
            flag = "-o" if f.name == "run_dir" else "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    args.append(flag)
            elif isinstance(value, tuple):
                args += [flag, *(str(v) for v in value)]
            elif isinstance(value, float):
                args += [flag, repr(value)]
            else:
                args += [flag, str(value)]
        return args + (["--resume"] if self.resume else [])

    @classmethod
    def from_cli_args(cls, args) -> "TrainingRequest":
        """The request of a parsed ``lightunetr train`` command line (the inverse of :meth:`to_cli_args`);
        options the parser left at ``None`` take the request's defaults."""
        values = {}
        for f in fields(cls):
            value = getattr(args, f.name, None)
            if value is not None:
                values[f.name] = value
        return cls(**values)
