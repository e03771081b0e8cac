"""``lightunetr export-onnx BUNDLE -o model.onnx``: export a bundle's network to ONNX, checked with ONNX Runtime.

The ONNX graph takes the preprocessed patch ``image`` (B, C, X, Y, Z) at the bundle's patch size and
returns ``logits`` (B, K, X, Y, Z); the model card is kept in the ONNX metadata. The file is written
only if ONNX Runtime (CPU) reproduces the PyTorch logits (max abs diff ≤ 1e-4·max(1, max|logits|)).
"""

from __future__ import annotations

import argparse
import time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="Export a model bundle to ONNX (verified against ONNX Runtime on the CPU).",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="model bundle folder (<name>.lightunetr)")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="allowed max |ORT - PyTorch| relative to max(1, max|logits|) (default 1e-4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--events", choices=("human", "json"), default="human",
                        help="human-readable messages on stderr, or JSON-lines events on stdout")
    parser.add_argument("--cancel-file", metavar="FILE", help="accepted for the job protocol (export is one step)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelToken, EventWriter

    events = EventWriter.for_cli("export-onnx", args.events)
    cancel = CancelToken(args.cancel_file)
    cancel.install_signal_handlers()
    start = time.perf_counter()
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        events.error(f"{output} already exists; choose another name or pass --overwrite", kind="bad_input")
        return EXIT_BAD_INPUT
    if output.suffix.lower() != ".onnx":
        events.error(f"output {output} should end in .onnx", kind="bad_input")
        return EXIT_BAD_INPUT
    try:
        from lightunetr_core.bundle import BundleError, read_model_card

        card = read_model_card(args.bundle)
    except BundleError as exc:
        events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    events.started(total=1, config={"bundle": str(args.bundle), "output": str(output), "opset": args.opset,
                                    "patch_size": card.patch_size, "architecture": card.architecture})
    if cancel.cancelled():
        events.emit("cancelled", message=cancel.reason or "cancelled", checkpoint=None)
        return EXIT_CANCELLED
    try:
        from lightunetr_core.bundle import BundleError
        from lightunetr_core.export.onnx import OnnxExportError, export_bundle_onnx

        events.stage("export", f"tracing {card.architecture} at patch {tuple(card.patch_size)} and checking with ONNX Runtime")
        report = export_bundle_onnx(args.bundle, output, opset=args.opset, rtol=args.rtol, overwrite=args.overwrite)
    except BundleError as exc:
        events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    except FileExistsError as exc:
        events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    except OnnxExportError as exc:
        events.error(str(exc), kind="internal")
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001
        events.error(f"{type(exc).__name__}: {exc}", kind="internal")
        return EXIT_ERROR
    events.emit("output", path=str(output), kind="onnx")
    events.emit("finished", elapsed_s=round(time.perf_counter() - start, 3), **report.to_dict())
    return EXIT_OK
