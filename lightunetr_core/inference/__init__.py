"""Inference: :class:`InferenceOptions` → :class:`Segmenter` (or :func:`segment_image` for one case).

``options`` (what to do) → ``runtime`` (device, backend, out-of-memory fallback) → ``sliding`` (windows) →
``input_grid`` (labels back on the input's grid) → ``postprocess`` (ROI, largest component, entropy);
``pipeline`` runs them in that order. Names are imported on first use, so ``inference.options`` stays
importable without torch (the Slicer modules build job arguments from it).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "InferenceOptions": "options",
    "Segmenter": "pipeline",
    "SegmentationResult": "pipeline",
    "segment_image": "pipeline",
    "InferenceInputError": "postprocess",
    "keep_largest_components": "postprocess",
    "normalized_entropy": "postprocess",
    "roi_to_index_box": "postprocess",
    "BACKEND_CHOICES": "backends",
    "BackendUnavailableError": "backends",
    "resolve_backend": "backends",
    "count_windows": "sliding",
    "predict_probabilities": "sliding",
}
_FROM_CORE = {"DEVICE_CHOICES": "lightunetr_core.devices", "select_device": "lightunetr_core.devices"}

__all__ = sorted([*_EXPORTS, *_FROM_CORE])


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    elif name in _FROM_CORE:
        module = importlib.import_module(_FROM_CORE[name])
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
