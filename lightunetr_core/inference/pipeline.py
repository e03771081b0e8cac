"""From input volume(s) and a bundle to a label map on the input's own grid.

:class:`Segmenter` loads a model once and segments many cases (as nnU-Net's predictor and MONAI's inferers
do); :func:`segment_image` is the one-case shorthand. One case goes read → crop to the ROI → preprocess
(:mod:`lightunetr_core.data.preprocessing`) → class probabilities on the model grid (:mod:`.runtime`) →
labels back on the input grid (:mod:`.input_grid`) → post-processing (:mod:`.postprocess`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from lightunetr_core.bundle import LoadedBundle, load_bundle
from lightunetr_core.data.geometry import Geometry, array_to_image
from lightunetr_core.data.io import read_image
from lightunetr_core.data.preprocessing import GeometryMismatchError, preprocess_case
from lightunetr_core.inference.backends import BackendUnavailableError
from lightunetr_core.inference.input_grid import labels_on_original_grid
from lightunetr_core.inference.options import InferenceOptions
from lightunetr_core.inference.postprocess import (
    InferenceInputError,
    inside_box,
    keep_largest_components,
    normalized_entropy,
    roi_to_index_box,
)
from lightunetr_core.inference.runtime import Runtime
from lightunetr_core.inference.sliding import overlap_for_stride
from lightunetr_core.jobs import CancelToken

__all__ = [
    "InferenceInputError",
    "BackendUnavailableError",
    "SegmentationResult",
    "Segmenter",
    "segment_image",
    "keep_largest_components",
    "normalized_entropy",
    "roi_to_index_box",
]


@dataclass
class SegmentationResult:
    """Output of a segmentation; every image has exactly the input's grid.

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


def _as_images(images) -> list[sitk.Image]:
    if isinstance(images, (sitk.Image, str, os.PathLike)):
        images = [images]
    return [img if isinstance(img, sitk.Image) else read_image(img) for img in images]


class Segmenter:
    """A model loaded once, segmenting one case after another with the same :class:`InferenceOptions`.

    Args:
        bundle: a :class:`~lightunetr_core.bundle.LoadedBundle` or the path of a bundle.
        options: how to segment (``None``: the defaults).
        log: receives notes such as the out-of-memory fallback or the ONNX export.

    Raises :class:`BackendUnavailableError` (an input error) when the requested backend cannot run here.
    """

    def __init__(self, bundle: LoadedBundle | str | os.PathLike, options: InferenceOptions | None = None,
                 log: Callable[[str], None] | None = None):
        self.options = options or InferenceOptions()
        self.bundle = bundle if isinstance(bundle, LoadedBundle) else load_bundle(bundle, device="cpu")
        self.card = self.bundle.card
        self._log = log
        self._notes: list[str] = []
        if self.options.threads:
            torch.set_num_threads(int(self.options.threads))
        self.runtime = Runtime(self.bundle, self.options, self._note)
        self.overlap = self.options.overlap
        if self.options.stride is not None:
            try:
                self.overlap = overlap_for_stride(self.options.stride, self.card.patch_size)
            except ValueError as error:
                raise InferenceInputError(str(error)) from None

    def _note(self, message: str) -> None:
        self._notes.append(message)
        if self._log is not None:
            self._log(message)

    def segment(self, images, progress: Callable[[int, int], None] | None = None,
                cancel: CancelToken | None = None) -> SegmentationResult:
        """Segment one case: ``images`` is one SimpleITK image (or file path) per input channel of the model,
        on one grid. ``progress(done, total)`` per batch of windows; ``cancel`` raises ``JobCancelled``
        between windows. The result's images have exactly the input's size, spacing, origin and direction."""
        options, card = self.options, self.card
        self._notes = []
        timings: dict = {}
        t0 = time.perf_counter()
        images = _as_images(images)
        if len(images) != len(card.input_channels):
            raise InferenceInputError(
                f"the model '{card.name}' needs {len(card.input_channels)} input image(s) "
                f"({', '.join(card.input_channels)}), got {len(images)}; pass one image per channel in that order."
            )
        full = Geometry.of(images[0])
        box = None
        if options.roi is not None:
            box = roi_to_index_box(full, options.roi)
            images = [sitk.RegionOfInterest(img, box[1], box[0]) for img in images]
        try:
            case = preprocess_case(images, card.plan, channel_names=card.input_channels)
        except GeometryMismatchError as exc:
            raise InferenceInputError(str(exc)) from None
        timings["preprocess_s"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        if self.runtime.backend == "onnxruntime":
            self.runtime.prepare()
            timings["backend_setup_s"] = time.perf_counter() - t1
        probs = self.runtime.probabilities(torch.from_numpy(case.image), options, self.overlap, progress, cancel)
        timings["inference_s"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        if options.return_probabilities or options.return_uncertainty:
            probabilities = case.to_original_grid(probs.cpu().numpy())
            labels = np.argmax(probabilities, axis=0).astype(np.uint8)
        else:  # argmax in model space; linear resampling only in cells a class boundary crosses
            probabilities = None
            labels = labels_on_original_grid(case, probs.cpu().numpy())
        del probs
        if box is not None:
            # The index box covers the physical box; for oblique images it is larger, so keep only the
            # voxels whose centres are inside the box.
            keep = inside_box(full, box[0], box[1], options.roi)
            labels = np.where(keep, labels, 0).astype(np.uint8)
            if probabilities is not None:
                probabilities[0] = np.where(keep, probabilities[0], 1.0)
                probabilities[1:] *= keep
        largest = options.largest_component_classes(card)
        if largest:
            labels = keep_largest_components(labels, classes=largest)
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
        result = SegmentationResult(labels=array_to_image(labels, full), device=str(self.runtime.device),
                                    backend=self.runtime.backend, messages=list(self._notes), timings=timings)
        if options.return_probabilities:
            result.probabilities = array_to_image(np.moveaxis(probabilities.astype(np.float32), 0, -1), full, vector=True)
        if options.return_uncertainty:
            result.uncertainty = array_to_image(normalized_entropy(probabilities), full)
        timings["postprocess_s"] = time.perf_counter() - t2
        return result


def segment_image(bundle: LoadedBundle | str | os.PathLike, images, *, progress=None, cancel=None, log=None,
                  **options) -> SegmentationResult:
    """Segment one case: ``Segmenter(bundle, InferenceOptions(**options), log).segment(images, progress, cancel)``.
    ``options`` are the fields of :class:`InferenceOptions` (``overlap``, ``stride``, ``device``, ...)."""
    return Segmenter(bundle, InferenceOptions(**options), log=log).segment(images, progress=progress, cancel=cancel)
