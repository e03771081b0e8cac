"""``segment_image``: from input volume(s) and a bundle to a label map on the input's own grid."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from lightunetr_core.bundle import LoadedBundle, load_bundle
from lightunetr_core.components import keep_largest_components
from lightunetr_core.data.geometry import Geometry, array_to_image
from lightunetr_core.data.io import read_image
from lightunetr_core.data.preprocessing import GeometryMismatchError, preprocess_case
from lightunetr_core.inference.backends import BackendUnavailableError, onnxruntime_predictor, resolve_backend
from lightunetr_core.devices import is_out_of_memory, select_device
from lightunetr_core.inference.postprocess import labels_on_original_grid
from lightunetr_core.inference.sliding import overlap_for_stride, predict_probabilities
from lightunetr_core.jobs import CancelToken
from lightunetr_core.vocabulary import InputError

__all__ = [
    "InferenceInputError",
    "BackendUnavailableError",
    "SegmentationResult",
    "segment_image",
    "keep_largest_components",
    "normalized_entropy",
    "roi_to_index_box",
]


class InferenceInputError(InputError):
    """The inputs do not fit the model (channel count, grids, ROI); the message says what to change."""


@dataclass
class SegmentationResult:
    """Output of :func:`segment_image`; every image has exactly the input's grid.

    Attributes:
        labels: uint8 label map (values = the card's label values).
        probabilities: float32 vector image with one component per class (or ``None``).
        uncertainty: float32 normalised entropy in [0, 1] (or ``None``).
        device: device the network finally ran on.
        backend: ``"torch"`` or ``"onnxruntime"``, the backend that ran the network.
        messages: notes for the user (e.g. an out-of-memory fallback).
        timings: seconds per stage.
    """

    labels: sitk.Image
    probabilities: sitk.Image | None = None
    uncertainty: sitk.Image | None = None
    device: str = "cpu"
    backend: str = "torch"
    messages: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def normalized_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``-Σ p log p / log K`` over the class axis 0: 0 = certain, 1 = uniform."""
    k = probabilities.shape[0]
    p = np.clip(probabilities, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=0)
    return (entropy / np.log(k)).astype(np.float32) if k > 1 else np.zeros(p.shape[1:], np.float32)


def roi_to_index_box(geometry: Geometry, roi: Sequence[float]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Physical box ``(x0, y0, z0, x1, y1, z1)`` in LPS mm → voxel ``(start, size)`` covering it, clipped
    to the image. Raises :class:`InferenceInputError` when the box misses the image."""
    roi = [float(v) for v in roi]
    if len(roi) != 6:
        raise InferenceInputError(f"ROI needs 6 numbers x0 y0 z0 x1 y1 z1 (LPS mm), got {len(roi)}")
    lo, hi = np.minimum(roi[:3], roi[3:]), np.maximum(roi[:3], roi[3:])
    corners = [[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    indices = np.array([geometry.physical_to_index(c) for c in corners])
    start = np.floor(indices.min(axis=0) + 1e-6).astype(int)
    stop = np.ceil(indices.max(axis=0) - 1e-6).astype(int) + 1
    start = np.maximum(start, 0)
    stop = np.minimum(stop, geometry.size)
    if np.any(stop - start < 1):
        raise InferenceInputError(
            f"the ROI {tuple(roi)} (LPS mm) does not overlap the image ({geometry.describe()}). Give the box "
            "in LPS millimetres (Slicer shows RAS: negate x and y)."
        )
    return tuple(int(s) for s in start), tuple(int(s) for s in (stop - start))


def _inside_box(geometry: Geometry, start: Sequence[int], size: Sequence[int], roi: Sequence[float]) -> np.ndarray:
    """Which voxels of the crop ``start``/``size`` have their centre inside the LPS box ``roi`` (slice by slice)."""
    roi = np.asarray(roi, float)
    lo, hi = np.minimum(roi[:3], roi[3:]), np.maximum(roi[:3], roi[3:])
    scaled = geometry.direction_matrix * np.asarray(geometry.spacing)  # columns: step per index axis
    i = np.arange(start[0], start[0] + size[0], dtype=float)
    j = np.arange(start[1], start[1] + size[1], dtype=float)
    ii, jj = np.meshgrid(i, j, indexing="ij")
    plane = np.asarray(geometry.origin) + ii[..., None] * scaled[:, 0] + jj[..., None] * scaled[:, 1]
    mask = np.empty(tuple(size), bool)
    for n, k in enumerate(range(start[2], start[2] + size[2])):
        points = plane + k * scaled[:, 2]
        mask[:, :, n] = np.all((points >= lo - 1e-6) & (points <= hi + 1e-6), axis=-1)
    return mask


def _as_images(images) -> list[sitk.Image]:
    if isinstance(images, (sitk.Image, str, os.PathLike)):
        images = [images]
    return [img if isinstance(img, sitk.Image) else read_image(img) for img in images]


def segment_image(
    bundle: LoadedBundle | str | os.PathLike,
    images,
    *,
    overlap: float | Sequence[float] = 0.5,
    stride: Sequence[int] | None = None,
    blend: str = "gaussian",
    tta_flips: bool = False,
    largest_component: bool = False,
    roi: Sequence[float] | None = None,
    return_probabilities: bool = False,
    return_uncertainty: bool = False,
    sw_batch_size: int = 1,
    device: str | torch.device | None = None,
    backend: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] | None = None,
) -> SegmentationResult:
    """Segment one case.

    Args:
        bundle: a :class:`~lightunetr_core.bundle.LoadedBundle` or the path of a bundle.
        images: one SimpleITK image (or file path) per input channel of the model, on one grid.
        overlap: window overlap (0..1) of the sliding window, one value or one per axis.
        stride: window step in voxels of the model grid per axis, instead of ``overlap`` (the
            reference's dense test used 18, 18, 4 for LA and 16, 16, 4 for Pancreas-CT with
            ``blend="constant"``).
        blend: ``"gaussian"`` or ``"constant"`` window weighting.
        tta_flips: average with mirrored predictions (×4 time).
        largest_component: keep only the largest connected component of every class.
        roi: optional physical box ``(x0, y0, z0, x1, y1, z1)`` in LPS mm; only voxels inside are
            segmented, the rest is background.
        return_probabilities / return_uncertainty: also return class probabilities / entropy map.
        sw_batch_size: windows per network call.
        device: ``"auto"``, ``"cuda"``, ``"cpu"``, ``"mps"``, a ``torch.device``, or ``None`` (the model's device).
        backend: ``"auto"`` (ONNX Runtime when the device is the CPU and ``onnxruntime`` is installed, else
            PyTorch), ``"torch"`` or ``"onnxruntime"`` (CPU only; the network is exported to ONNX once and
            cached, see :mod:`lightunetr_core.inference.backends`; ONNX Runtime uses
            ``torch.get_num_threads()`` threads). Raises :class:`BackendUnavailableError` (a ``ValueError``)
            when the requested backend cannot run here.
        progress: ``progress(done, total)`` per batch of windows.
        cancel: :class:`~lightunetr_core.jobs.CancelToken`; raises ``JobCancelled`` between windows.
        log: receives notes such as the out-of-memory fallback.

    Returns:
        :class:`SegmentationResult` whose images have exactly the input's size, spacing, origin and
        direction. Probabilities are resampled to the input grid before the argmax.
    """
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if log is not None:
            log(message)

    timings: dict = {}
    t0 = time.perf_counter()
    if not isinstance(bundle, LoadedBundle):
        bundle = load_bundle(bundle, device="cpu")
    card, model = bundle.card, bundle.model
    if stride is not None:
        try:
            overlap = overlap_for_stride(stride, card.patch_size)
        except ValueError as error:
            raise InferenceInputError(str(error)) from None
    images = _as_images(images)
    if len(images) != len(card.input_channels):
        raise InferenceInputError(
            f"the model '{card.name}' needs {len(card.input_channels)} input image(s) "
            f"({', '.join(card.input_channels)}), got {len(images)}; pass one image per channel in that order."
        )
    full = Geometry.of(images[0])
    box = None
    if roi is not None:
        box = roi_to_index_box(full, roi)
        images = [sitk.RegionOfInterest(img, box[1], box[0]) for img in images]
    try:
        case = preprocess_case(images, card.plan, channel_names=card.input_channels)
    except GeometryMismatchError as exc:
        raise InferenceInputError(str(exc)) from None
    timings["preprocess_s"] = time.perf_counter() - t0

    target = select_device(device) if device is not None else bundle.device
    backend_name = resolve_backend(backend, target)
    tensor = torch.from_numpy(case.image)
    t1 = time.perf_counter()
    batch = max(1, int(sw_batch_size))
    output_device = target
    if backend_name == "onnxruntime":
        try:
            predictor = onnxruntime_predictor(bundle, threads=torch.get_num_threads(), log=note)
        except Exception as exc:  # noqa: BLE001 - "auto" must still segment when the export fails
            if (backend or "auto").lower() != "auto":
                raise
            note(f"ONNX Runtime could not be prepared ({type(exc).__name__}: {exc}); using PyTorch instead")
            backend_name = "torch"
        timings["backend_setup_s"] = time.perf_counter() - t1
    if backend_name == "onnxruntime":
        probs = predict_probabilities(
            predictor, tensor, card.patch_size, overlap=overlap, blend=blend, sw_batch_size=batch,
            tta_flips=tta_flips, device=torch.device("cpu"), output_device=torch.device("cpu"),
            progress=progress, cancel=cancel,
        )
    while backend_name == "torch":
        try:
            model.to(target)
            probs = predict_probabilities(
                model, tensor, card.patch_size, overlap=overlap, blend=blend, sw_batch_size=batch,
                tta_flips=tta_flips, device=target, output_device=output_device, progress=progress, cancel=cancel,
            )
            break
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not is_out_of_memory(exc) or target.type == "cpu":
                raise
            if target.type == "cuda":
                torch.cuda.empty_cache()
            if output_device.type != "cpu":
                output_device = torch.device("cpu")
                note(f"out of memory on {target}: keeping the blended volume in CPU memory and retrying")
            elif batch > 1:
                batch = max(1, batch // 2)
                note(f"out of memory on {target}: retrying with {batch} window(s) per batch")
            else:
                note(f"out of memory on {target} even with one window per batch: falling back to the CPU (slower)")
                target = output_device = torch.device("cpu")
    timings["inference_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    need_probabilities = return_probabilities or return_uncertainty
    if need_probabilities:
        probabilities = case.to_original_grid(probs.cpu().numpy())
        labels = np.argmax(probabilities, axis=0).astype(np.uint8)
    else:  # argmax in model space; linear resampling only in cells a class boundary crosses
        probabilities = None
        labels = labels_on_original_grid(case, probs.cpu().numpy())
    del probs

    if box is not None:
        # The index box covers the physical box; for oblique images it is larger, so keep only the
        # voxels whose centres are inside the box.
        keep = _inside_box(full, box[0], box[1], roi)
        labels = np.where(keep, labels, 0).astype(np.uint8)
        if probabilities is not None:
            probabilities[0] = np.where(keep, probabilities[0], 1.0)
            probabilities[1:] *= keep
    if largest_component:
        labels = keep_largest_components(labels, classes=range(1, card.num_classes))
    if box is not None:
        sl = tuple(slice(s, s + n) for s, n in zip(*box))
        full_labels = np.zeros(full.size, np.uint8)
        full_labels[sl] = labels
        labels = full_labels
        if probabilities is not None:
            full_probs = np.zeros((probabilities.shape[0],) + full.size, np.float32)
            full_probs[0] = 1.0
            full_probs[(slice(None),) + sl] = probabilities
            probabilities = full_probs
    result = SegmentationResult(labels=array_to_image(labels, full), device=str(target), backend=backend_name,
                                messages=notes, timings=timings)
    if return_probabilities:
        result.probabilities = array_to_image(np.moveaxis(probabilities.astype(np.float32), 0, -1), full, vector=True)
    if return_uncertainty:
        result.uncertainty = array_to_image(normalized_entropy(probabilities), full)
    timings["postprocess_s"] = time.perf_counter() - t2
    return result
