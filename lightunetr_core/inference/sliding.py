"""Sliding-window prediction of class probabilities with MONAI's ``sliding_window_inference``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from lightunetr_core.jobs import CancelToken

__all__ = ["count_windows", "predict_probabilities", "overlap_for_stride", "FLIP_AXES"]

#: Test-time augmentation: identity plus a mirror along each spatial axis (averaged probabilities).
FLIP_AXES: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))


def _per_axis_overlap(overlap: float | Sequence[float], dims: int) -> list[float]:
    values = [float(overlap)] * dims if isinstance(overlap, (int, float)) else [float(o) for o in overlap]
    if len(values) != dims or not all(0.0 <= o < 1.0 for o in values):
        raise ValueError(f"overlap must be one number or {dims} numbers in [0, 1), got {overlap}")
    return values


def overlap_for_stride(stride: Sequence[int], patch_size: Sequence[int]) -> list[float]:
    """Per-axis overlap that makes MONAI place windows ``stride`` voxels apart, like the reference's
    dense test (starts ``min(i·stride, S − P)``; e.g. LA: stride 18, 18, 4 for a 112×112×80 patch).

    MONAI derives the step as ``int(P · (1 − overlap))``; the tiny margin keeps float rounding from
    turning a step of 18 into 17."""
    if len(stride) != len(patch_size):
        raise ValueError(f"stride {tuple(stride)} needs one value per patch axis {tuple(patch_size)}")
    if not all(0 < int(t) <= int(p) for t, p in zip(stride, patch_size)):
        raise ValueError(f"stride {tuple(stride)} must be between 1 and the patch size {tuple(patch_size)} per axis")
    return [max(0.0, 1.0 - (int(t) + 1e-6) / int(p)) for t, p in zip(stride, patch_size)]


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float | Sequence[float]) -> int:
    """Number of windows ``sliding_window_inference`` uses (after padding a small volume up to the roi)."""
    from monai.data.utils import dense_patch_slices

    size = [max(int(s), int(r)) for s, r in zip(image_size, roi_size)]
    overlaps = _per_axis_overlap(overlap, len(size))
    interval = [int(r) if s == r else max(int(r * (1 - o)), 1) for s, r, o in zip(size, roi_size, overlaps)]
    return len(dense_patch_slices(size, [int(r) for r in roi_size], interval))


def predict_probabilities(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch_size: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    blend: str = "gaussian",
    sw_batch_size: int = 1,
    tta_flips: bool = False,
    device: torch.device | None = None,
    output_device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """Softmax probabilities ``(K, X, Y, Z)`` (float32, on ``output_device``) for one ``(C, X, Y, Z)`` image.

    Logits are blended across windows (Gaussian or constant weights) and then turned into
    probabilities; with ``tta_flips`` the probabilities of the identity and of the three mirrored
    inputs are averaged. Volumes smaller than the patch are zero-padded (MONAI) and cropped back.
    ``progress(done, total)`` is called after each batch of windows; ``cancel`` is polled before each.

    ``model`` is a ``torch.nn.Module`` or any callable ``(B, C, *patch) tensor → (B, K, *patch) logits``
    (e.g. :class:`~lightunetr_core.inference.backends.OnnxRuntimePredictor`); for a plain callable
    ``device`` defaults to the CPU.
    """
    from monai.inferers import sliding_window_inference

    overlap = _per_axis_overlap(overlap, image.ndim - 1)
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    if device is None:
        device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    output_device = output_device or device
    roi = [int(s) for s in patch_size]
    passes = FLIP_AXES if tta_flips else ((),)
    windows = count_windows(image.shape[1:], roi, overlap)
    batches_per_pass = math.ceil(windows / sw_batch_size)
    total = batches_per_pass * len(passes)
    done = 0

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        nonlocal done
        if cancel is not None:
            cancel.raise_if_cancelled()
        out = model(batch)
        done += 1
        if progress is not None:
            progress(done, total)
        return out

    x = image.unsqueeze(0).to(torch.float32)
    probabilities = None
    with torch.inference_mode():
        for axes in passes:
            xin = torch.flip(x, axes) if axes else x
            logits = sliding_window_inference(
                xin, roi, sw_batch_size, predictor, overlap=overlap, mode=blend,
                padding_mode="constant", cval=0.0, sw_device=device, device=output_device,
            )
            logits = torch.as_tensor(logits)  # plain tensor (MONAI may return a MetaTensor)
            if axes:
                logits = torch.flip(logits, axes)
            p = torch.softmax(logits.float(), dim=1)[0]
            probabilities = p if probabilities is None else probabilities + p
    return probabilities / len(passes)
