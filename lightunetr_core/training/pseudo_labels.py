"""Pseudo-labels for Attention-Guided Replacement (the pseudo-labels of the authors' code_cse/train_cse_withval.py;
the multi-class form is ours: the authors' code handles two classes).

* :func:`binary_pseudo_label` — the reference: ``p(class 1) ≥ 0.5`` then the largest connected
  component (26-connectivity) per sample; an empty foreground stays empty.
* :func:`multiclass_pseudo_label` — any K: arg-max, then for the chosen foreground classes keep only
  their largest connected component (26-connectivity); removed voxels become background.

The largest-component step suits a class that is one connected structure (the authors' left atrium,
pancreas, tumour). A class with separate parts (left and right kidneys, bilateral nuclei, several lesions)
would lose all but one part in every pseudo-label, which teaches the network that the other parts are
background; :func:`largest_component_classes` decides per class from the labelled cases.

Both label the whole batch (and every class) with a single ``scipy.ndimage.label`` call: the samples
and classes are stacked along extra axes that the structuring element does not connect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from lightunetr_core.components import component_sizes, largest_components

#: A class is one connected structure when, in every labelled case that has it, its second-largest
#: component is smaller than this fraction of its largest (annotation specks do not make a class multi-part).
SECOND_PART_FRACTION = 0.05


def binary_pseudo_label(probs: torch.Tensor, threshold: float = 0.5, largest: bool = True) -> torch.Tensor:
    """``probs`` (B, K≥2, X, Y, Z) → int64 labels (B, X, Y, Z) in {0, 1}; ``largest=False`` keeps every part."""
    fg = (probs[:, 1] >= threshold).detach().cpu().numpy()
    kept = largest_components(fg) if largest else fg
    return torch.from_numpy(kept.astype(np.int64)).to(probs.device)


def multiclass_pseudo_label(probs: torch.Tensor, largest_classes: Sequence[int] | None = None) -> torch.Tensor:
    """``probs`` (B, K, X, Y, Z) → int64 labels (B, X, Y, Z): arg-max, then the largest connected component
    of each class in ``largest_classes`` (``None``: every foreground class)."""
    b, k = probs.shape[:2]
    arg = probs.detach().argmax(1).cpu().numpy()
    chosen = list(range(1, k)) if largest_classes is None else sorted(int(c) for c in largest_classes if 0 < int(c) < k)
    if not chosen:
        return torch.from_numpy(arg.astype(np.int64)).to(probs.device)
    classes = np.asarray(chosen).reshape(1, len(chosen), 1, 1, 1)
    masks = arg[:, None] == classes  # (B, n, X, Y, Z)
    kept = largest_components(masks.reshape((b * len(chosen),) + arg.shape[1:])).reshape(masks.shape)
    out = arg.copy()
    out[masks.any(1) & ~kept.any(1)] = 0  # the chosen classes' smaller parts become background
    return torch.from_numpy(out.astype(np.int64)).to(probs.device)


def agr_pseudo_label(probs: torch.Tensor, largest_classes: Sequence[int] | None = None) -> torch.Tensor:
    """The reference's binary rule for K = 2, arg-max otherwise; the largest-component step for the classes in
    ``largest_classes`` (``None``: every foreground class, as the reference)."""
    if probs.shape[1] == 2:
        return binary_pseudo_label(probs, largest=largest_classes is None or 1 in largest_classes)
    return multiclass_pseudo_label(probs, largest_classes)


def single_structure_classes(labels: Iterable[np.ndarray], num_classes: int,
                             second_part_fraction: float = SECOND_PART_FRACTION) -> tuple[int, ...]:
    """The foreground classes that are one connected structure in every label map of ``labels`` that has them
    (see :data:`SECOND_PART_FRACTION`); a class no label map has counts as one structure."""
    multi_part: set[int] = set()
    for label in labels:
        label = np.asarray(label)
        for c in range(1, num_classes):
            if c in multi_part:
                continue
            sizes = component_sizes(label == c)
            if len(sizes) > 1 and sizes[1] >= second_part_fraction * sizes[0]:
                multi_part.add(c)
    return tuple(c for c in range(1, num_classes) if c not in multi_part)


def largest_component_classes(mode: str, num_classes: int, labels: Iterable[np.ndarray] = ()) -> tuple[int, ...]:
    """The classes whose AGR pseudo-label keeps only its largest component, for ``--pseudo-label-components``:
    ``largest``: every foreground class (the reference); ``all``: none; ``auto``: the reference's rule with two
    classes, else :func:`single_structure_classes` of the labelled cases."""
    every = tuple(range(1, num_classes))
    if mode == "largest" or (mode == "auto" and num_classes == 2):
        return every
    if mode == "all":
        return ()
    if mode == "auto":
        return single_structure_classes(labels, num_classes)
    raise ValueError(f"pseudo-label components {mode!r}: use auto, largest or all")
