"""``lightunetr import-reference``: turn an authors' Light-UNETR checkpoint into a ``.lightunetr`` bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

#: Defaults of the released models (spec §3.11); ``--preset`` fills what is not given explicitly.
PRESETS: dict[str, dict] = {
    "la": {
        "variant": "lightunetr", "patch_size": [112, 112, 80], "spacing": [0.625, 0.625, 0.625],
        "normalization": "zscore", "modality": ["MR"], "labels": ["background", "left atrium"],
        "description": "Left atrium in gadolinium-enhanced cardiac MR (LA 2018 challenge), Light-UNETR + CSE.",
    },
    "pancreas": {
        "variant": "lightunetr", "patch_size": [96, 96, 96], "spacing": [1.0, 1.0, 1.0],
        "normalization": "ct", "ct_window": [-125.0, 275.0], "modality": ["CT"],
        "labels": ["background", "pancreas"],
        "description": "Pancreas in contrast-enhanced abdominal CT (NIH Pancreas-CT), Light-UNETR + CSE.",
    },
    "brats": {
        "variant": "lightunetr", "patch_size": [96, 96, 96], "spacing": [1.0, 1.0, 1.0],
        "normalization": "zscore-nonzero", "modality": ["FLAIR"], "labels": ["background", "whole tumor"],
        "description": "Whole brain tumour in skull-stripped FLAIR MR (BraTS 2019), Light-UNETR + CSE.",
    },
}

NORMALIZATIONS = ("zscore", "zscore-nonzero", "ct", "minmax", "none")


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
    parser.set_defaults(func=run)


def _normalization(kind: str, ct_window):
    from lightunetr_core.data.preprocessing import IntensityNormalization

    if kind == "zscore-nonzero":
        return IntensityNormalization("zscore", nonzero=True)
    if kind == "ct":
        return IntensityNormalization("ct", window=tuple(ct_window or (-125.0, 275.0)))
    return IntensityNormalization(kind)


def run(args: argparse.Namespace) -> int:
    import sys

    preset = PRESETS.get(args.preset, {}) if args.preset else {}

    def pick(name, fallback=None):
        value = getattr(args, name, None)
        return value if value is not None else preset.get(name, fallback)

    missing = [opt for opt, key in (("--patch-size", "patch_size"), ("--spacing", "spacing"),
                                    ("--normalization", "normalization"), ("--labels", "labels"))
               if pick(key) is None]
    variant = pick("variant", "lightunetr")
    if variant == "lightunetr_large" and "--patch-size" in missing:
        missing.remove("--patch-size")
    if missing:
        print(f"error: {', '.join(missing)} required (or use --preset la|pancreas|brats)", file=sys.stderr)
        return 2
    try:
        import torch

        from lightunetr_core.bundle import BundleError, ModelCard, default_labels, save_bundle
        from lightunetr_core.data.preprocessing import PreprocessingPlan
        from lightunetr_core.models import from_reference_state_dict

        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            raise ValueError(f"{checkpoint}: checkpoint not found")
        try:
            state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling refusal is a bad input
            raise ValueError(
                f"{checkpoint}: cannot load as a weights-only checkpoint ({str(exc).splitlines()[0][:200]}). "
                "Only plain state_dicts are accepted; code inside pickles is never run."
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"{checkpoint}: expected a state_dict (dict of tensors), got {type(state).__name__}")
        patch = pick("patch_size") or [96, 96, 96]
        model = from_reference_state_dict(state, variant=variant, patch_size=patch)
        modalities = pick("modality") or ["image"] * model.in_channels
        if len(modalities) != model.in_channels:
            raise ValueError(f"the checkpoint has {model.in_channels} input channel(s); --modality lists {len(modalities)}")
        labels = pick("labels")
        if len(labels) != model.num_classes:
            raise ValueError(f"the checkpoint has {model.num_classes} classes; --labels lists {len(labels)} "
                             "(background first)")
        norm = _normalization(pick("normalization"), pick("ct_window"))
        plan = PreprocessingPlan(target_spacing=tuple(pick("spacing")), normalization=[norm] * model.in_channels)
        arch_args = {"in_channels": model.in_channels, "num_classes": model.num_classes}
        if variant == "lightunetr":
            arch_args["patch_size"] = [int(s) for s in patch]
        output = Path(args.output)
        name = args.name or output.name.removesuffix(".lightunetr")
        card = ModelCard(
            name=name,
            description=pick("description", "") or "",
            architecture=variant,
            architecture_args=arch_args,
            patch_size=[int(s) for s in patch],
            preprocessing=plan.to_dict(),
            input_channels=list(modalities),
            labels=default_labels(labels),
            provenance={"recipe": "reference checkpoint (CUHK-AIM-Group/Light-UNETR)",
                        "source": args.source or str(checkpoint.name), "preset": args.preset},
        )
        path = save_bundle(output, model, card, overwrite=args.overwrite)
    except (ValueError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle written: {path}")
    return 0
