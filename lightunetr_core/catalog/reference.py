"""The authors' released checkpoints: their settings (presets) and their conversion into a model bundle.

A checkpoint of the reference implementation is a plain ``state_dict`` (``torch.save(model.state_dict())``
in CUHK-AIM-Group/Light-UNETR ``code_cse/train_cse_withval.py``; ``test_cse.py`` loads it with
``load_state_dict(checkpoint, strict=True)``). It is read with ``torch.load(..., weights_only=True)`` — no
code inside a pickle is ever run — renamed to our parameter names and loaded strictly, so a file that is not
that network is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightunetr_core.vocabulary import InputError

#: Settings of the released models (the authors' test script code_cse/test_cse.py and the preprocessing of
#: their data: LA z-score at 0.625 mm, Pancreas-CT clipped to [-125, 275] HU at 1 mm, BraTS FLAIR z-score of
#: the brain voxels at 1 mm); explicit options win.
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


class ReferenceCheckpointError(InputError):
    """The file is not a usable checkpoint of the reference network; the message says why."""


def _normalization(kind: str, ct_window):
    from lightunetr_core.data.preprocessing import IntensityNormalization

    if kind == "zscore-nonzero":
        return IntensityNormalization("zscore", nonzero=True)
    if kind == "ct":
        return IntensityNormalization("ct", window=tuple(ct_window or (-125.0, 275.0)))
    return IntensityNormalization(kind)


def settings(preset: str | None = None, **explicit) -> dict:
    """The preset's settings with the explicit (non-None) ones on top; raises ReferenceCheckpointError
    naming the settings still missing."""
    if preset is not None and preset not in PRESETS:
        raise ReferenceCheckpointError(f"unknown preset {preset!r}; use one of {', '.join(sorted(PRESETS))}")
    out = dict(PRESETS.get(preset, {})) if preset else {}
    out.update({k: v for k, v in explicit.items() if v is not None})
    out.setdefault("variant", "lightunetr")
    needed = ["spacing", "normalization", "labels"] + (["patch_size"] if out["variant"] == "lightunetr" else [])
    missing = [f"--{k.replace('_', '-')}" for k in needed if out.get(k) is None]
    if missing:
        raise ReferenceCheckpointError(f"{', '.join(missing)} required (or use --preset {'|'.join(sorted(PRESETS))})")
    return out


def load_reference_checkpoint(path: str | os.PathLike, variant: str, patch_size) :
    """The reference network with the checkpoint's weights (strict). Raises ReferenceCheckpointError."""
    import torch

    from lightunetr_core.models import from_reference_state_dict

    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or damaged file is a bad input
        raise ReferenceCheckpointError(
            f"{path}: cannot load as a weights-only checkpoint ({str(exc).splitlines()[0][:200]}). Only plain "
            "state_dicts are accepted (code inside pickles is never run); a damaged or incomplete file is refused too."
        ) from None
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise ReferenceCheckpointError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    try:
        return from_reference_state_dict(state, variant=variant, patch_size=patch_size)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ReferenceCheckpointError(
            f"{path}: the weights are not those of the reference {variant} network with patch "
            f"{tuple(patch_size) if patch_size else '(any)'} ({str(exc).splitlines()[0][:200]}); check the preset") from None


def bundle_from_reference(checkpoint: str | os.PathLike, output: str | os.PathLike, preset: str | None = None,
                          name: str | None = None, overwrite: bool = False, card_fields: dict | None = None,
                          provenance: dict | None = None, **explicit) -> Path:
    """Convert an authors' checkpoint into a bundle at ``output`` (written atomically by ``save_bundle``).

    ``explicit``: variant, patch_size, spacing, normalization, ct_window, modality, labels, description
    (override the preset). ``card_fields``: version, license, authors, citation, changelog of the card.
    Raises ReferenceCheckpointError or BundleError."""
    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle, sha256_file
    from lightunetr_core.data.preprocessing import PreprocessingPlan

    s = settings(preset, **explicit)
    variant = s["variant"]
    patch = s.get("patch_size") or [96, 96, 96]
    model = load_reference_checkpoint(checkpoint, variant, patch)
    modalities = s.get("modality") or ["image"] * model.in_channels
    if len(modalities) != model.in_channels:
        raise ReferenceCheckpointError(f"the checkpoint has {model.in_channels} input channel(s); --modality lists {len(modalities)}")
    labels = s["labels"]
    if len(labels) != model.num_classes:
        raise ReferenceCheckpointError(f"the checkpoint has {model.num_classes} classes; --labels lists {len(labels)} "
                                       "(background first)")
    plan = PreprocessingPlan(target_spacing=tuple(s["spacing"]),
                             normalization=[_normalization(s["normalization"], s.get("ct_window"))] * model.in_channels)
    arch_args = {"in_channels": model.in_channels, "num_classes": model.num_classes}
    if variant == "lightunetr":
        arch_args["patch_size"] = [int(v) for v in patch]
    output = Path(output)
    card = ModelCard(
        name=name or output.name.removesuffix(".lightunetr"),
        description=s.get("description", "") or "",
        architecture=variant, architecture_args=arch_args, patch_size=[int(v) for v in patch],
        preprocessing=plan.to_dict(), input_channels=list(modalities), labels=default_labels(labels),
        provenance={"recipe": "reference checkpoint (CUHK-AIM-Group/Light-UNETR)", "preset": preset,
                    "source": str(Path(checkpoint).name), "source_sha256": sha256_file(Path(checkpoint)),
                    **(provenance or {})},
        **(card_fields or {}),
    )
    return save_bundle(output, model, card, overwrite=overwrite)
