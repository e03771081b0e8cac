"""``lightunetr import-reference``: turn an authors' Light-UNETR checkpoint into a ``.lightunetr`` bundle."""

from __future__ import annotations

import argparse

from lightunetr_core.catalog.reference import NORMALIZATIONS, PRESETS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-reference",
        help="convert an authors' Light-UNETR checkpoint (.pth) into a model bundle",
        description=(
            "Load a checkpoint of the reference implementation (torch.load with weights_only=True: no code "
            "is run), rename its weights to ours and save a .lightunetr bundle with a model card. "
            "--preset la|pancreas|brats fills the settings of the released models; explicit options win."
        ),
    )
    parser.add_argument("checkpoint", help="reference checkpoint (.pth state_dict)")
    parser.add_argument("-o", "--output", required=True, help="bundle folder to create (NAME.lightunetr)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--variant", choices=("lightunetr", "lightunetr_large"), default=None)
    parser.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None)
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), default=None,
                        help="voxel spacing (mm) the model was trained at")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                        help="zscore (whole volume), zscore-nonzero (stats of voxels != 0), ct (clip window → [0,1]), minmax, none")
    parser.add_argument("--ct-window", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="HU window for --normalization ct (default -125 275)")
    parser.add_argument("--modality", nargs="+", default=None, help="input channel names (e.g. MR, CT, FLAIR)")
    parser.add_argument("--labels", nargs="+", default=None, help="class names, background first")
    parser.add_argument("--name", default=None, help="model name (default: output folder name)")
    parser.add_argument("--description", default=None)
    parser.add_argument("--source", default=None, help="where the checkpoint came from (URL, paper)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--events", choices=("human", "json"), default="human")
    parser.add_argument("--cancel-file", default=None, help="stop (nothing written) when this file appears")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightunetr_core.bundle import BundleError
    from lightunetr_core.catalog.reference import ReferenceCheckpointError, bundle_from_reference
    from lightunetr_core.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK, CancelToken, EventWriter

    events = EventWriter.for_cli("import-reference", args.events)
    cancel = CancelToken(args.cancel_file)
    cancel.install_signal_handlers()
    events.started(total=None, config={"checkpoint": args.checkpoint, "preset": args.preset, "output": args.output})
    events.stage("convert", f"verifying {args.checkpoint} (weights only, strict) and writing the bundle")
    if cancel.cancelled():  # the conversion itself takes a second or two and is not interrupted
        events.emit("cancelled", message="cancelled; no bundle was written", checkpoint=None)
        return EXIT_CANCELLED
    try:
        path = bundle_from_reference(
            args.checkpoint, args.output, preset=args.preset, name=args.name, overwrite=args.overwrite,
            provenance={"source": args.source} if args.source else None,
            variant=args.variant, patch_size=args.patch_size, spacing=args.spacing, normalization=args.normalization,
            ct_window=args.ct_window, modality=args.modality, labels=args.labels, description=args.description)
    except (ReferenceCheckpointError, BundleError, ValueError) as exc:
        events.error(str(exc), kind="bad_input")
        return EXIT_BAD_INPUT
    events.emit("output", path=str(path), kind="bundle")
    events.emit("finished", bundle=str(path))
    return EXIT_OK
