"""Weak and strong views of a training crop (the authors' code_cse/dataloaders/pancreas.py and volumentations/: gamma and
noise on the whole volume, then the crop).

The weak view is the crop itself. The strong view depends on the recipe:

* ``"reference"``: min–max of the *whole volume* to [0, 1] (using the case's ``volume_min`` /
  ``volume_max`` so a crop is rescaled exactly as the whole volume would be), then a power
  γ ~ U(0.7, 1.5) (one γ per sample), then with probability 0.5 additive Gaussian noise with standard
  deviation σ ~ U(0, 0.1). Not mapped back: the strong view lives on [0, 1] (+noise) while the weak
  view keeps the dataset's normalisation — this is what the released numbers were trained with.
* ``"paper"``: random gamma only. The crop is min–max rescaled, raised to γ and mapped back to the
  volume's original range, so weak and strong views share one intensity scale.

All randomness comes from the ``torch.Generator`` passed in (CPU generator; the draws are moved to the
image's device).
"""

from __future__ import annotations

import torch

GAMMA_RANGE = (0.7, 1.5)
NOISE_PROBABILITY = 0.5
NOISE_MAX_STD = 0.1


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _minmax(image: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, c = image.shape[:2]
    shape = (n, c) + (1,) * (image.ndim - 2)
    vmin = vmin.to(image.device, torch.float32).reshape(shape)
    vmax = vmax.to(image.device, torch.float32).reshape(shape)
    scale = (vmax - vmin).clamp_min(1e-8)
    # Zero padding added around small volumes can lie outside [vmin, vmax]; clamp keeps γ defined.
    return ((image - vmin) / scale).clamp(0.0, 1.0), vmin, scale


def strong_view(
    image: torch.Tensor,
    volume_min: torch.Tensor,
    volume_max: torch.Tensor,
    generator: torch.Generator,
    variant: str = "reference",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Strong view of a batch of crops ``image`` (n, C, X, Y, Z) whose cases span
    ``volume_min`` … ``volume_max`` (n, C). ``variant`` is ``"reference"`` or ``"paper"``.

    ``valid`` (n, X, Y, Z) marks voxels inside the volume; the others are zero padding of a volume
    smaller than the patch. The reference augments the whole volume first and pads afterwards, so
    padding stays exactly 0 in the strong view (no γ, no noise)."""
    if variant not in ("reference", "paper"):
        raise ValueError(f"unknown strong-view variant {variant!r}; use 'reference' or 'paper'")
    n = image.shape[0]
    unit, vmin, scale = _minmax(image.float(), volume_min, volume_max)
    gamma = _uniform(n, *GAMMA_RANGE, generator).to(image.device, torch.float32)
    out = unit.pow(gamma.reshape((n,) + (1,) * (image.ndim - 1)))
    if variant == "paper":
        return _zero_padding(out * scale + vmin, valid)
    apply = torch.rand(n, generator=generator, dtype=torch.float64) < NOISE_PROBABILITY
    sigma = _uniform(n, 0.0, NOISE_MAX_STD, generator) * apply
    noise = torch.randn(image.shape, generator=generator, dtype=torch.float32)
    noise = noise * sigma.to(torch.float32).reshape((n,) + (1,) * (image.ndim - 1))
    return _zero_padding(out + noise.to(image.device), valid)


def _zero_padding(view: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return view
    return torch.where(valid.to(view.device).unsqueeze(1), view, torch.zeros((), dtype=view.dtype, device=view.device))


def weak_view(image: torch.Tensor) -> torch.Tensor:
    """The weak view is the crop unchanged (no flips or rotations in the reference)."""
    return image
