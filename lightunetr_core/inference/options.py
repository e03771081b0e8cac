"""How to segment: one options object for :class:`~lightunetr_core.inference.pipeline.Segmenter`, the
``lightunetr segment`` command line and the Slicer job that runs it.

Standard library only (the Slicer module builds a job's arguments from it without importing torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from lightunetr_core.vocabulary import InputError

__all__ = ["InferenceOptions"]


@dataclass
class InferenceOptions:
    """Settings of one segmentation.

    Args:
        overlap: window overlap (0..1) of the sliding window, one value or one per axis.
        stride: window step in voxels of the model grid per axis, instead of ``overlap`` (the reference's
            dense test used 18, 18, 4 for LA and 16, 16, 4 for Pancreas-CT with ``blend="constant"``).
        blend: ``"gaussian"`` or ``"constant"`` window weighting.
        tta_flips: average with mirrored predictions (×4 time).
        largest_component: keep only the largest connected component of every class (``True``), or of the classes
            the model's card names as one connected structure (``"auto"``: ``provenance.largest_component_classes``,
            decided from the labelled cases at training; every class when the card does not say), so that a class
            of separate parts (both kidneys) keeps them.
        roi: physical box ``(x0, y0, z0, x1, y1, z1)`` in LPS mm; only voxels inside are segmented.
        return_probabilities / return_uncertainty: also return class probabilities / the entropy map.
        sw_batch_size: windows per network call.
        device: ``"auto"``, ``"cuda"``, ``"cuda:N"``, ``"cpu"``, ``"mps"``; ``None``: where the bundle was loaded.
        backend: ``"auto"`` (ONNX Runtime on the CPU when installed, else PyTorch), ``"torch"``, ``"onnxruntime"``.
        threads: CPU threads (``None``: PyTorch's default).
    """

    overlap: float | Sequence[float] = 0.5
    stride: Sequence[int] | None = None
    blend: str = "gaussian"
    tta_flips: bool = False
    largest_component: bool | str = False
    roi: Sequence[float] | None = None
    return_probabilities: bool = False
    return_uncertainty: bool = False
    sw_batch_size: int = 1
    device: str | None = None
    backend: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        # Tuples, so options compare equal however they were given (argparse gives lists).
        for name in ("stride", "roi", "overlap"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                setattr(self, name, tuple(value))
        overlaps = self.overlap if isinstance(self.overlap, Sequence) else [self.overlap]
        if not all(0.0 <= float(o) < 1.0 for o in overlaps):
            raise InputError(f"overlap {self.overlap} must be in [0, 1)")
        if int(self.sw_batch_size) < 1:
            raise InputError("the window batch (sw_batch_size) must be at least 1")
        if self.threads is not None and int(self.threads) < 1:
            raise InputError("threads must be at least 1")
        if self.largest_component not in (False, True, "auto"):
            raise InputError(f"largest component {self.largest_component!r}: use True (every class), 'auto' or False")
        if self.blend not in ("gaussian", "constant"):
            raise InputError(f"blend {self.blend!r}: use 'gaussian' or 'constant'")
        if self.roi is not None and len(self.roi) != 6:
            raise InputError(f"ROI needs 6 numbers x0 y0 z0 x1 y1 z1 (LPS mm), got {len(self.roi)}")

    def largest_component_classes(self, card) -> list[int]:
        """The classes whose largest connected component is kept, for a model with this ``card``."""
        every = list(range(1, card.num_classes))
        if not self.largest_component:
            return []
        if self.largest_component == "auto":
            named = (card.provenance or {}).get("largest_component_classes")
            return [int(c) for c in named] if isinstance(named, list) else every
        return every

    def replace(self, **changes) -> "InferenceOptions":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return InferenceOptions(**values)

    @classmethod
    def from_cli_args(cls, args) -> "InferenceOptions":
        """The options of a parsed ``lightunetr segment`` command line (the inverse of :meth:`to_cli_args`)."""
        return cls(overlap=args.overlap, stride=args.stride, blend=args.blend, tta_flips=args.tta,
                   largest_component={None: False, "all": True, "auto": "auto"}[args.largest_component], roi=args.roi, return_probabilities=args.probabilities,
                   return_uncertainty=args.uncertainty, sw_batch_size=args.sw_batch_size, device=args.device,
                   backend=args.backend, threads=args.threads)

    def to_cli_args(self) -> list[str]:
        """The ``lightunetr segment`` options that ask for these settings (inputs and outputs not included)."""
        args: list[str] = []
        if self.stride is not None:
            args += ["--stride", *(str(int(s)) for s in self.stride)]
        elif self.overlap != 0.5:
            if isinstance(self.overlap, Sequence):
                raise InputError("the command line takes one --overlap; give a --stride per axis instead")
            args += ["--overlap", str(float(self.overlap))]
        if self.blend != "gaussian":
            args += ["--blend", self.blend]
        if self.largest_component:
            args += ["--largest-component", "auto" if self.largest_component == "auto" else "all"]
        for flag, on in (("--tta", self.tta_flips),
                         ("--probabilities", self.return_probabilities), ("--uncertainty", self.return_uncertainty)):
            if on:
                args.append(flag)
        if self.roi is not None:
            args += ["--roi", *(repr(float(v)) for v in self.roi)]
        if int(self.sw_batch_size) != 1:
            args += ["--sw-batch-size", str(int(self.sw_batch_size))]
        if self.device is not None:
            args += ["--device", str(self.device)]
        if self.backend != "auto":
            args += ["--backend", self.backend]
        if self.threads:
            args += ["--threads", str(int(self.threads))]
        return args
