"""Training's "Start from" (Qt-free): fine-tune a model of the library or of the catalog instead of starting
from random weights.

A start-from value is ``""`` (random initialisation), the path of a library bundle, or ``"catalog:NAME"`` (a
catalog model not downloaded yet: :class:`~.logic.TrainingJob` downloads it first). The starting model fixes
what must match: its architecture and patch size (Light-UNETR's position embedding is sized by the patch),
one input channel (the module exports one volume per case), and as many classes as the cases have segments.
Its spacing and intensity normalisation are used for the new data (``lightunetr train --init-bundle`` does
that), so the weights see what they were trained on.
"""

from __future__ import annotations

import json
import os

CATALOG_PREFIX = "catalog:"
RANDOM = ""


def catalog_name(value: str | None) -> str | None:
    """The catalog name of a ``"catalog:NAME"`` value, else None."""
    return value[len(CATALOG_PREFIX):] if value and value.startswith(CATALOG_PREFIX) else None


def choices(library) -> list[tuple[str, str, str]]:
    """(text, value, tooltip) for the "Start from" list: random weights, the library's models, then the catalog
    models not yet in the library (downloaded when training starts)."""
    from LightUNETRSlicerLib import modelinstall

    out = [("Random initialisation", RANDOM, "Train from random weights")]
    models, _ = library.discover()
    for m in models:
        out.append((m.name, m.path, m.summary()))
    installed = modelinstall.installed_catalog_models(library)
    try:
        entries = modelinstall.catalog_entries()
    except ValueError:  # an unreadable catalog: the library models remain usable
        entries = []
    for entry in entries:
        if entry.name not in installed:
            out.append((f"{entry.name} (download)", CATALOG_PREFIX + entry.name,
                        f"{entry.title}. Downloaded into the model library when training starts."))
    return out


def card_for(value: str | None) -> dict | None:
    """The model card of a start-from value: the bundle's card, or for a catalog model not downloaded yet the
    card its preset will produce. None for random initialisation. Raises ValueError for an unusable value."""
    if not value:
        return None
    name = catalog_name(value)
    if name is not None:
        from lightunetr_core.catalog.catalog import find
        from lightunetr_core.catalog.reference import PRESETS

        entry = find(name)
        s = PRESETS[entry.preset]
        return {"name": entry.name, "architecture": s["variant"], "patch_size": list(s["patch_size"]),
                "input_channels": list(s["modality"]), "preprocessing": {"target_spacing": list(s["spacing"])},
                "labels": [{"value": k, "name": n} for k, n in enumerate(s["labels"])]}
    from LightUNETRSlicerLib.models import CARD_FILE

    path = os.path.join(value, CARD_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"the starting model {value} cannot be read ({exc}); choose another one in 'Start from'.") from None


def fixed_settings(card: dict | None) -> dict:
    """The training settings a starting model fixes: ``architecture``, ``patch_size`` (tuple), ``target_spacing``
    (tuple or None). Empty for random initialisation."""
    if not card:
        return {}
    spacing = (card.get("preprocessing") or {}).get("target_spacing")
    return {"architecture": card.get("architecture"), "patch_size": tuple(int(p) for p in card.get("patch_size", [])),
            "target_spacing": tuple(float(s) for s in spacing) if spacing else None}


def resolve(value: str | None, library) -> str | None:
    """``value`` with a ``"catalog:NAME"`` that is installed by now (downloaded meanwhile) replaced by its
    library path; otherwise unchanged."""
    name = catalog_name(value)
    if name is None:
        return value
    from LightUNETRSlicerLib import modelinstall

    installed = modelinstall.installed_catalog_models(library).get(name)
    return installed.path if installed is not None else value


def modality_for(card: dict) -> str:
    """The Training form's modality (config.MODALITIES) for the starting model's first input channel."""
    name = str((card.get("input_channels") or ["other"])[0]).upper()
    if name == "CT":
        return "CT"
    if name in ("MR", "MRI", "FLAIR", "T1", "T1W", "T1CE", "T1GD", "T2", "T2W", "LGE", "DWI", "ADC"):
        return "MR"
    return "other"


def form_values(card: dict | None) -> dict:
    """The Training form's fields a starting model sets (parameter-node names: ``architecture``,
    ``patchSize``, ``targetSpacing``, ``modality``); empty for random initialisation, or for a card whose
    architecture this module does not know (then nothing is locked and Check reports it)."""
    from .config import ARCHITECTURES

    fixed = fixed_settings(card)
    if not fixed or fixed["architecture"] not in ARCHITECTURES or len(fixed["patch_size"]) != 3:
        return {}
    spacing = fixed["target_spacing"]
    return {"architecture": fixed["architecture"], "patchSize": ",".join(str(v) for v in fixed["patch_size"]),
            "targetSpacing": ",".join(f"{v:g}" for v in spacing) if spacing else "", "modality": modality_for(card)}


def problems(config, classes: list[str]) -> list[str]:
    """What keeps ``config.init_bundle`` from being fine-tuned on cases with these ``classes``."""
    try:
        card = card_for(config.init_bundle)
    except ValueError as exc:
        return [str(exc)]
    if card is None:
        return []
    out = []
    name = card.get("name", config.init_bundle)
    fixed = fixed_settings(card)
    if config.architecture != fixed["architecture"]:
        out.append(f"Start from '{name}' is a {fixed['architecture']} model; set Architecture to {fixed['architecture']}.")
    if tuple(int(p) for p in config.patch_size) != fixed["patch_size"]:
        out.append(f"Start from '{name}' was trained with patch {'x'.join(map(str, fixed['patch_size']))}; "
                   "fine-tuning needs the same patch size.")
    if len(card.get("input_channels", [])) != 1:
        out.append(f"Start from '{name}' takes {len(card.get('input_channels', []))} input channels; this module "
                   "trains on one volume per case.")
    theirs = [lb.get("name") for lb in card.get("labels", []) if int(lb.get("value", 0)) != 0]
    if classes and len(theirs) != len(classes):
        out.append(f"Start from '{name}' segments {len(theirs)} structure(s) ({', '.join(theirs)}); the cases have "
                   f"{len(classes)} ({', '.join(classes)}). Choose a model with as many structures, or 'Random "
                   "initialisation'.")
    return out
