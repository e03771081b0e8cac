"""Training configuration (Qt-free) and its translation into ``lightunetr train`` arguments."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from lightunetr_core import vocabulary
from lightunetr_core.training.request import TrainingRequest

RECIPES = tuple(vocabulary.RECIPES)  # the command line's names
ARCHITECTURES = vocabulary.ARCHITECTURES
MODALITIES = ("MR", "CT", "other")
#: Inclusive ranges of the integer options (the Training module's spin boxes and parameter node use them).
RANGES = {
    "iterations": (1, 1_000_000),
    "batch_labeled": (1, 64),
    "batch_unlabeled": (0, 64),
    "val_every": (0, 1_000_000),
}


def parse_patch_size(text: str) -> tuple:
    """``"96,96,96"``, ``"96x96x96"``, ``"96 96 96"`` or ``"96"`` → a tuple of ints (``()`` when unreadable;
    :meth:`TrainingConfig.problems` then says what is wrong)."""
    parts = [p for p in re.split(r"[\s,x×]+", str(text).strip().lower()) if p]
    try:
        patch = tuple(int(p) for p in parts)
    except ValueError:
        return ()
    return patch * 3 if len(patch) == 1 else patch


def parse_spacing(text: str) -> tuple | None:
    """``""`` → None (the median spacing of the labelled cases); ``"1.5,1.5,2.5"``, ``"1.5 1.5 2.5"`` or
    ``"1"`` → mm per axis; ``()`` when unreadable (:meth:`TrainingConfig.problems` says what is wrong)."""
    parts = [p for p in re.split(r"[\s,x×]+", str(text or "").strip().lower()) if p]
    if not parts:
        return None
    try:
        spacing = tuple(float(p) for p in parts)
    except ValueError:
        return ()
    return spacing * 3 if len(spacing) == 1 else spacing


@dataclass
class TrainingConfig:
    """Options of one training run (defaults follow ``lightunetr train``, with fewer iterations)."""

    name: str = "MyModel"  # bundle / model name (made unique in the models folder)
    recipe: str = "cse-reference"  # cse-reference | cse-paper | supervised
    architecture: str = "lightunetr"
    iterations: int = 2000
    patch_size: tuple = (96, 96, 96)
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    val_every: int = 200
    optimizer: str = "sgd"
    lr: float | None = None
    device: str = "auto"
    threads: int | None = None
    seed: int = 1337
    modality: str = "MR"  # "CT" → clip + scale, else z-score (lightunetr_core.data.planning)
    target_spacing: tuple | None = None  # None: the engine's default (median of the labelled cases)
    init_bundle: str | None = None  # fine-tune from this bundle, or "catalog:NAME" (startfrom.py)
    extra_args: list = field(default_factory=list)
    # after training
    register_model: bool = True
    segment_unlabeled: bool = True
    rank_uncertainty: bool = False
    # The job folder's copies of the patient images (data/) and their preprocessed cache (run/cache/) are
    # deleted once a training completed and its model was registered, unless kept.
    keep_case_data: bool = False
    inference_device: str = "auto"
    plot: bool = True

    def problems(self) -> list[str]:
        out = []
        if self.recipe not in RECIPES:
            out.append(f"Unknown recipe {self.recipe!r}; use one of {', '.join(RECIPES)}.")
        if self.architecture not in ARCHITECTURES:
            out.append(f"Unknown architecture {self.architecture!r}; use one of {', '.join(ARCHITECTURES)}.")
        if self.modality not in MODALITIES:
            out.append(f"Unknown modality {self.modality!r}; use one of {', '.join(MODALITIES)}.")
        lo, hi = RANGES["iterations"]
        if not lo <= int(self.iterations) <= hi:
            out.append(f"Iterations must be between {lo} and {hi}.")
        ps = tuple(int(p) for p in self.patch_size)
        if len(ps) != 3 or any(p < 16 or p % 16 for p in ps):
            out.append(f"Patch size {list(ps)}: every axis must be a multiple of 16 (e.g. 96x96x96).")
        if int(self.batch_labeled) < 1:
            out.append("The labelled batch size must be at least 1.")
        if self.recipe != "supervised" and int(self.batch_unlabeled) < 1:
            out.append("CSE needs an unlabelled batch size of at least 1 (or choose the 'supervised' recipe).")
        if int(self.val_every) < 0:
            out.append("'Validate every' must be 0 (only at the end) or more.")
        if self.target_spacing is not None and (len(tuple(self.target_spacing)) != 3
                                                or not all(0 < float(v) < 100 for v in self.target_spacing)):
            out.append(f"Target spacing {list(self.target_spacing)}: give three spacings in mm (e.g. 1.5,1.5,2.5), "
                       "or leave it empty for the median spacing of the labelled cases.")
        if not re.sub(r"[^A-Za-z0-9]", "", self.name or ""):
            out.append("Give the model a name (letters or digits).")
        return out

    def request(self, manifest: str, run_dir: str, resume: bool = False) -> TrainingRequest:
        """The engine's request for this configuration (data and run folder from the job)."""
        return TrainingRequest(
            data=manifest, run_dir=run_dir, recipe=self.recipe, architecture=self.architecture,
            iterations=int(self.iterations), patch_size=tuple(int(p) for p in self.patch_size),
            batch_labeled=int(self.batch_labeled), batch_unlabeled=int(self.batch_unlabeled),
            val_every=int(self.val_every), optimizer=self.optimizer, seed=int(self.seed), device=self.device,
            name=self.name, lr=float(self.lr) if self.lr is not None else None,
            threads=int(self.threads) if self.threads else None, init_bundle=self.init_bundle or None, resume=resume)

    def train_args(self, manifest: str, run_dir: str, resume: bool = False) -> list[str]:
        """Arguments after ``lightunetr train`` (the request's, then ``extra_args``)."""
        return self.request(manifest, run_dir, resume).to_cli_args() + [str(a) for a in self.extra_args]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainingConfig":
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown training option(s) {unknown}; known: {sorted(known)}.")
        if "patch_size" in d:
            p = d["patch_size"]
            d["patch_size"] = tuple(p) if isinstance(p, (list, tuple)) else (int(p),) * 3
        return cls(**d)


def as_config(config) -> TrainingConfig:
    if config is None:
        return TrainingConfig()
    if isinstance(config, TrainingConfig):
        return config
    return TrainingConfig.from_dict(config)
