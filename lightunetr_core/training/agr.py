"""Attention-Guided Replacement: choose the box where labelled content replaces unlabelled content
(``soft_attention_mask`` in the authors' code_cse/utils/BCP_utils.py, called with ``mask_ratio=2/3``).

Reference (``soft_attention_mask`` with ratio 2/3):
  box side per axis ``s = int(size·2/3)``; a 3×3×3 grid of **overlapping** candidates with starts
  ``i·int((size − s)/2)``, i ∈ {0, 1, 2}; the score of a box is the attention summed inside it *and over
  the whole unlabelled batch*; scores are min–max normalised to [0, 1] then soft-maxed; one box is
  sampled for the whole batch (here with a seeded ``torch.Generator``).

Paper (Eq. in §III): non-overlapping grid of P = ⌊H/α⌋ per axis (N = ⌈H/P⌉ cells, the last one
truncated), softmax of the raw sums, one box per image.

Box sums are computed for all candidates at once with per-axis indicator matrices
(``einsum``) — no Python loop over boxes, no ``.item()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REFERENCE_RATIO = 2.0 / 3.0
PAPER_ALPHA = 1.5


@dataclass(frozen=True)
class BoxCandidates:
    """Candidate boxes as per-axis (start, end) lists; candidate (i, j, k) is the product."""

    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    ends: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    size: tuple[int, int, int]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(len(s) for s in self.starts)

    @property
    def count(self) -> int:
        return math.prod(self.grid)

    def axis_indicators(self, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """Per axis a (n_a, size_a) 0/1 matrix: row i marks the voxels of candidate i on that axis."""
        out = []
        for starts, ends, n in zip(self.starts, self.ends, self.size):
            pos = torch.arange(n, device=device)
            s = torch.tensor(starts, device=device)[:, None]
            e = torch.tensor(ends, device=device)[:, None]
            out.append(((pos >= s) & (pos < e)).to(dtype))
        return out

    def box_sums(self, attention: torch.Tensor) -> torch.Tensor:
        """``attention`` (B, X, Y, Z) → (B, n_candidates) sums inside every candidate (raster order
        i·(nj·nk) + j·nk + k)."""
        ax, ay, az = self.axis_indicators(attention.device, torch.float64)
        # Separable: contract one axis at a time (three small matmuls, no 27×volume intermediate).
        sums = torch.einsum("bxyz,kz->bxyk", attention.double(), az)
        sums = torch.einsum("bxyk,jy->bxjk", sums, ay)
        sums = torch.einsum("bxjk,ix->bijk", sums, ax)
        return sums.reshape(attention.shape[0], -1)

    def masks(self, index: torch.Tensor) -> torch.Tensor:
        """Box masks (len(index), 1, X, Y, Z) for candidate indices ``index`` (1-D long tensor)."""
        ax, ay, az = self.axis_indicators(index.device)
        nj, nk = self.grid[1], self.grid[2]
        i, j, k = index // (nj * nk), (index // nk) % nj, index % nk
        return (ax[i][:, :, None, None] * ay[j][:, None, :, None] * az[k][:, None, None, :]).unsqueeze(1)


def reference_candidates(size: Sequence[int], ratio: float = REFERENCE_RATIO) -> BoxCandidates:
    size = tuple(int(s) for s in size)
    sides = [int(s * ratio) for s in size]
    steps = [int((s - side) / 2) for s, side in zip(size, sides)]
    starts = tuple(tuple(i * t for i in range(3)) for t in steps)
    ends = tuple(tuple(st + side for st in axis) for axis, side in zip(starts, sides))
    return BoxCandidates(starts, ends, size)


def paper_candidates(size: Sequence[int], alpha: float = PAPER_ALPHA) -> BoxCandidates:
    size = tuple(int(s) for s in size)
    starts, ends = [], []
    for s in size:
        p = max(1, int(math.floor(s / alpha)))
        n = math.ceil(s / p)
        starts.append(tuple(i * p for i in range(n)))
        ends.append(tuple(min((i + 1) * p, s) for i in range(n)))
    return BoxCandidates(tuple(starts), tuple(ends), size)


def reference_probabilities(attention: torch.Tensor, candidates: BoxCandidates) -> torch.Tensor:
    """``attention`` (B, 1, X, Y, Z) → (n_candidates,) probabilities shared by the batch."""
    scores = candidates.box_sums(attention.detach()[:, 0]).sum(0)
    low, high = scores.min(), scores.max()
    span = high - low
    normalised = torch.where(span > 0, (scores - low) / torch.where(span > 0, span, torch.ones_like(span)),
                             torch.zeros_like(scores))
    return torch.softmax(normalised, dim=0).float()


def paper_probabilities(attention: torch.Tensor, candidates: BoxCandidates) -> torch.Tensor:
    """(B, n_candidates) probabilities, softmax of the raw sums per image."""
    return torch.softmax(candidates.box_sums(attention.detach()[:, 0]), dim=1).float()


def _resize(attention: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    size = tuple(int(s) for s in size)
    if tuple(attention.shape[2:]) == size:
        return attention.detach()
    return F.interpolate(attention.detach(), size=size, mode="trilinear", align_corners=True)


def agr_box_mask(
    attention: torch.Tensor,
    generator: torch.Generator,
    variant: str = "reference",
    size: Sequence[int] | None = None,
    ratio: float = REFERENCE_RATIO,
    alpha: float = PAPER_ALPHA,
) -> torch.Tensor:
    """Sample the replacement box from the attention map (B, 1, X, Y, Z).

    Returns a float mask (B, 1, X, Y, Z), 1 inside the box. ``"reference"``: one box for the whole
    batch; ``"paper"``: one box per image.
    """
    size = tuple(attention.shape[2:]) if size is None else tuple(size)
    attention = _resize(attention, size)
    if variant == "reference":
        cand = reference_candidates(size, ratio)
        probs = reference_probabilities(attention, cand)
        index = torch.multinomial(probs.cpu(), 1, generator=generator).to(attention.device)
        return cand.masks(index).expand(attention.shape[0], -1, -1, -1, -1).contiguous()
    if variant == "paper":
        cand = paper_candidates(size, alpha)
        probs = paper_probabilities(attention, cand)
        index = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(attention.device)
        return cand.masks(index)
    raise ValueError(f"unknown AGR variant {variant!r}; use 'reference' or 'paper'")
