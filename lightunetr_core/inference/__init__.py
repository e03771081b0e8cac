"""Inference: sliding-window prediction and the whole-case ``segment_image`` pipeline."""

from lightunetr_core.inference.backends import BACKEND_CHOICES, BackendUnavailableError, resolve_backend
from lightunetr_core.devices import DEVICE_CHOICES, select_device
from lightunetr_core.inference.pipeline import (
    InferenceInputError,
    SegmentationResult,
    keep_largest_components,
    normalized_entropy,
    roi_to_index_box,
    segment_image,
)
from lightunetr_core.inference.sliding import count_windows, predict_probabilities

__all__ = [
    "BACKEND_CHOICES",
    "BackendUnavailableError",
    "resolve_backend",
    "DEVICE_CHOICES",
    "select_device",
    "InferenceInputError",
    "SegmentationResult",
    "segment_image",
    "keep_largest_components",
    "normalized_entropy",
    "roi_to_index_box",
    "count_windows",
    "predict_probabilities",
]
