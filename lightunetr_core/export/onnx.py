"""ONNX export of Light-UNETR / Light-UNETR-L, verified with ONNX Runtime (CPU).

:func:`export_onnx` traces a network on an example input of its patch size, writes the ONNX file
atomically (temporary file + rename) and refuses to keep it unless ONNX Runtime on the CPU gives the
same logits as PyTorch: ``max|ort - torch| <= rtol * max(1, max|torch|)`` (``rtol = 1e-4``).

The graph has one input ``image`` ``(B, C, X, Y, Z)`` float32 (already preprocessed: spacing,
orientation and intensity normalisation of the model card) and one output ``logits``
``(B, K, X, Y, Z)``; the batch axis is dynamic, the spatial axes are fixed to the patch size
(Light-UNETR's position embedding ties it to that size; run it with sliding windows). The model
card of a bundle is stored in the ONNX metadata (``lightunetr_model_card``) so an ONNX consumer
knows the labels and the preprocessing.

The exporter used is TorchScript-based (``torch.onnx.export(..., dynamo=False)``): it needs no
extra package (the dynamo exporter needs ``onnxscript``) and exports the fused attention
(``scaled_dot_product_attention``) and the explicit path alike. Needs the ``onnx`` extra:
``pip install lightunetr-core[onnx]``.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lightunetr_core.atomic import atomic_path

__all__ = ["OnnxExportError", "OnnxExportReport", "export_onnx", "export_bundle_onnx", "compare_with_onnxruntime"]

DEFAULT_OPSET = 17
DEFAULT_RTOL = 1e-4


class OnnxExportError(RuntimeError):
    """The export failed or the exported graph does not reproduce the PyTorch output."""


@dataclass
class OnnxExportReport:
    path: str
    opset: int
    input_shape: list[int]
    output_shape: list[int]
    max_abs_diff: float
    max_abs_reference: float
    tolerance: float
    export_s: float
    file_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OnnxExportError(
            f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is missing): "
            "pip install 'lightunetr-core[onnx]'"
        ) from None


class _LogitsOnly:
    """Build lazily so that importing this module does not import torch."""

    @staticmethod
    def wrap(model):
        from torch import nn

        class LogitsOnly(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, image):
                return self.inner(image)

        return LogitsOnly(model)


def compare_with_onnxruntime(path: str | os.PathLike, model, example) -> tuple[float, float, list[int]]:
    """Run ``example`` (a CPU float tensor) through ONNX Runtime (CPU) and ``model``; returns
    ``(max abs difference, max abs PyTorch output, output shape)``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    ort_out = session.run(None, {input_name: example.numpy()})[0]
    with torch.inference_mode():
        reference = model(example).float().numpy()
    if ort_out.shape != reference.shape:
        raise OnnxExportError(f"ONNX Runtime output shape {ort_out.shape} differs from PyTorch {reference.shape}")
    if not np.isfinite(ort_out).all():
        raise OnnxExportError("ONNX Runtime produced non-finite values")
    return float(np.abs(ort_out - reference).max()), float(np.abs(reference).max()), list(reference.shape)


def export_onnx(
    model,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    metadata: Mapping[str, str] | None = None,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
    overwrite: bool = False,
) -> OnnxExportReport:
    """Export ``model`` (an ``nn.Module`` returning logits) to ``path`` and verify it with ONNX Runtime.

    Args:
        model: the network; a CPU float32 copy in eval mode is exported (the original is untouched).
        path: output ``.onnx`` file; written atomically, only after the check passed.
        input_shape: example input ``(B, C, X, Y, Z)`` or ``(C, X, Y, Z)`` (batch 1 added).
        opset: ONNX opset (17: LayerNorm/GroupNorm-era ops, supported by ONNX Runtime ≥ 1.12).
        dynamic_batch: make the batch axis symbolic.
        metadata: extra string key/values stored in the ONNX model's metadata.
        rtol: the check passes when ``max|ort - torch| <= rtol * max(1, max|torch|)``.
        seed: seed of the random example input.
        overwrite: replace an existing file.

    Raises:
        OnnxExportError: missing packages, export failure, or outputs that do not match.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    _require_onnx()
    import onnx
    import torch

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True (--overwrite)")
    shape = [int(s) for s in input_shape]
    if len(shape) == 4:
        shape = [1] + shape
    if len(shape) != 5 or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be (B, C, X, Y, Z) with positive sizes, got {tuple(input_shape)}")

    cpu_model = copy.deepcopy(model).to("cpu").float().eval()
    wrapped = _LogitsOnly.wrap(cpu_model).eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(*shape, generator=generator)

    with atomic_path(path) as tmp:
        start = time.perf_counter()
        dynamic_axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
                torch.onnx.export(
                    wrapped,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise OnnxExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
        export_s = time.perf_counter() - start

        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        entries = {"lightunetr_input_shape": json.dumps(shape), "lightunetr_producer": "lightunetr_core.export.onnx"}
        entries.update({str(k): str(v) for k, v in (metadata or {}).items()})
        for key, value in entries.items():
            item = proto.metadata_props.add()
            item.key, item.value = key, value
        onnx.save(proto, str(tmp))

        max_diff, max_ref, out_shape = compare_with_onnxruntime(tmp, wrapped, example)
        tolerance = rtol * max(1.0, max_ref)
        if not max_diff <= tolerance:
            raise OnnxExportError(
                f"ONNX Runtime output differs from PyTorch by {max_diff:.3g} (allowed {tolerance:.3g}); the "
                "exported graph is not faithful, not writing it. Try another --opset."
            )
    return OnnxExportReport(
        path=str(path),
        opset=opset,
        input_shape=shape,
        output_shape=out_shape,
        max_abs_diff=max_diff,
        max_abs_reference=max_ref,
        tolerance=tolerance,
        export_s=export_s,
        file_bytes=path.stat().st_size,
    )


def export_bundle_onnx(
    bundle_path: str | os.PathLike,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    batch: int = 1,
    rtol: float = DEFAULT_RTOL,
    overwrite: bool = False,
) -> OnnxExportReport:
    """Export a ``.lightunetr`` bundle (see :mod:`lightunetr_core.bundle`) at its patch size; the model
    card is stored in the ONNX metadata under ``lightunetr_model_card``."""
    from lightunetr_core.bundle import load_bundle

    loaded = load_bundle(bundle_path, device="cpu")
    card = loaded.card
    shape = [batch, len(card.input_channels), *card.patch_size]
    metadata = {"lightunetr_model_card": card.to_json(), "lightunetr_labels": json.dumps(card.label_names)}
    return export_onnx(loaded.model, path, shape, opset=opset, metadata=metadata, rtol=rtol, overwrite=overwrite)
