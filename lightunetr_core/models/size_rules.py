"""Input-size rules shared by both networks (the hard-coded shapes of code_cse/networks/lightunetr.py: every axis a multiple
of 16).

Every spatial axis must be a multiple of 16 (LIDR reductions at 1/4 and 1/8). At 1/16 an odd grid
axis is zero-padded by one voxel at its end and cropped back later; this generalises the reference's
hard-coded (7,7,5) → (8,8,6) case and gives the same numbers there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

SIZE_MULTIPLE = 16


def nearest_valid_sizes(size: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The valid sizes just below and just above ``size`` (below is at least ``multiple``)."""
    below = max(multiple, (size // multiple) * multiple)
    above = math.ceil(size / multiple) * multiple
    return below, above


def check_spatial_size(shape: Sequence[int], multiple: int = SIZE_MULTIPLE) -> None:
    """Raise a ``ValueError`` naming the nearest valid sizes unless every axis is a multiple of 16."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D spatial size (X, Y, Z), got {shape}")
    bad = [(axis, s) for axis, s in enumerate(shape) if s <= 0 or s % multiple]
    if bad:
        hints = ", ".join(
            f"axis {axis}: {s} → {' or '.join(str(v) for v in sorted(set(nearest_valid_sizes(s, multiple))))}"
            for axis, s in bad
        )
        suggestion = tuple(nearest_valid_sizes(s, multiple)[1] if s % multiple or s <= 0 else s for s in shape)
        raise ValueError(
            f"input size {shape} is not valid for Light-UNETR: every axis must be a multiple of {multiple} "
            f"({hints}). Pad or crop to e.g. {suggestion}."
        )


def bottleneck_tokens(patch_size: Sequence[int]) -> int:
    """Token count at 1/32 resolution (after the odd-grid pad): Π ceil(axis / 32)."""
    return math.prod(math.ceil(int(s) / 32) for s in patch_size)


def pad_odd_axes(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad +1 at the end of every odd spatial axis; returns the padded tensor and the original grid."""
    grid = tuple(x.shape[2:])
    pads = [s % 2 for s in grid]
    if any(pads):
        # F.pad lists the last axis first.
        x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
    return x, grid


def crop_to(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes back to ``grid`` (drops the voxels added by :func:`pad_odd_axes`)."""
    if tuple(x.shape[2:]) == tuple(grid):
        return x
    return x[:, :, : grid[0], : grid[1], : grid[2]]
