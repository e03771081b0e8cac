"""``lightunetr export-bundle BUNDLE -o MODEL.zip``: one file to share a model (checked before it is written)."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-bundle",
        help="write a bundle as one .zip file (to share or archive it)",
        description="Check a bundle (card, weights SHA-256) and write it as one .zip holding NAME.lightunetr/model_card.json "
                    "and model.safetensors. The Slicer module's 'Add model...' and lightunetr segment -m accept the "
                    "unpacked folder; 'Add model...' also takes the .zip.",
    )
    parser.add_argument("bundle", help="bundle folder (NAME.lightunetr)")
    parser.add_argument("-o", "--output", required=True, help="zip file to write")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    from lightunetr_core.bundle import BundleError, export_bundle_zip

    try:
        path = export_bundle_zip(args.bundle, args.output, overwrite=args.overwrite)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
