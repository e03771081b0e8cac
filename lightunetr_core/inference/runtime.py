"""Where and how the network runs: the device and backend of a segmentation, and the class probabilities of
one preprocessed case through the sliding window, falling back when the GPU runs out of memory."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lightunetr_core.bundle import LoadedBundle
from lightunetr_core.devices import is_out_of_memory, select_device
from lightunetr_core.inference.backends import onnxruntime_predictor, resolve_backend
from lightunetr_core.inference.options import InferenceOptions
from lightunetr_core.inference.sliding import predict_probabilities
from lightunetr_core.jobs import CancelToken

__all__ = ["Runtime"]


class Runtime:
    """The device and backend a :class:`~lightunetr_core.inference.pipeline.Segmenter` runs its network on.

    ``backend`` is ``"onnxruntime"`` (CPU only; the network exported to ONNX once and cached) or
    ``"torch"``; ``"auto"`` picks ONNX Runtime on the CPU when it is installed. A failed ONNX export under
    ``"auto"`` falls back to PyTorch with a note; an explicit request raises.
    """

    def __init__(self, bundle: LoadedBundle, options: InferenceOptions, note: Callable[[str], None]):
        self.bundle = bundle
        self.device = select_device(options.device) if options.device is not None else bundle.device
        self.backend = resolve_backend(options.backend, self.device)
        self.requested_backend = (options.backend or "auto").lower()
        self.note = note
        self._onnx = None

    def prepare(self) -> None:
        """Export / load the ONNX network once (the first case pays for it)."""
        if self.backend != "onnxruntime" or self._onnx is not None:
            return
        try:
            self._onnx = onnxruntime_predictor(self.bundle, threads=torch.get_num_threads(), log=self.note)
        except Exception as exc:  # noqa: BLE001 - "auto" must still segment when the export fails
            if self.requested_backend != "auto":
                raise
            self.note(f"ONNX Runtime could not be prepared ({type(exc).__name__}: {exc}); using PyTorch instead")
            self.backend = "torch"

    def probabilities(self, image: torch.Tensor, options: InferenceOptions, overlap,
                      progress: Callable[[int, int], None] | None, cancel: CancelToken | None) -> torch.Tensor:
        """Class probabilities (K, X, Y, Z) of a preprocessed image (C, X, Y, Z) on the model grid.

        Out of GPU memory, it retries with the blended volume in CPU memory, then with half the windows per
        batch down to one, then on the CPU; each step is a note. The device that finally ran is ``self.device``.
        """
        patch = self.bundle.card.patch_size
        common = dict(overlap=overlap, blend=options.blend, tta_flips=options.tta_flips, progress=progress,
                      cancel=cancel)
        batch = max(1, int(options.sw_batch_size))
        if self.backend == "onnxruntime":
            cpu = torch.device("cpu")
            return predict_probabilities(self._onnx, image, patch, sw_batch_size=batch, device=cpu, output_device=cpu,
                                         **common)
        model, target = self.bundle.model, self.device
        output_device = target
        while True:
            try:
                model.to(target)
                return predict_probabilities(model, image, patch, sw_batch_size=batch, device=target,
                                             output_device=output_device, **common)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not is_out_of_memory(exc) or target.type == "cpu":
                    raise
                if target.type == "cuda":
                    torch.cuda.empty_cache()
                if output_device.type != "cpu":
                    output_device = torch.device("cpu")
                    self.note(f"out of memory on {target}: keeping the blended volume in CPU memory and retrying")
                elif batch > 1:
                    batch = max(1, batch // 2)
                    self.note(f"out of memory on {target}: retrying with {batch} window(s) per batch")
                else:
                    self.note(f"out of memory on {target} even with one window per batch: falling back to the CPU (slower)")
                    target = output_device = self.device = torch.device("cpu")
