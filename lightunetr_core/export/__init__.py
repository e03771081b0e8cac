"""Model export: ONNX (``lightunetr_core.export.onnx``, needs the ``onnx`` extra)."""

from lightunetr_core.export.onnx import (
    OnnxExportError,
    OnnxExportReport,
    compare_with_onnxruntime,
    export_bundle_onnx,
    export_onnx,
)

__all__ = ["OnnxExportError", "OnnxExportReport", "export_onnx", "export_bundle_onnx", "compare_with_onnxruntime"]
