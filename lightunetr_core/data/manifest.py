"""Describe a dataset: a manifest (ours, or a Decathlon / MONAI datalist) or a folder laid out as nnU-Net's.

Our manifest is JSON (YAML too when PyYAML is installed)::

    {
      "name": "liver",
      "modalities": ["MR"],                       # one entry per input channel ("CT" → clip+scale)
      "labels": {"0": "background", "1": "organ"},
      "cases": [
        {"id": "c01", "images": ["imagesTr/c01_0000.nii.gz"], "label": "labelsTr/c01.nii.gz", "role": "labeled"},
        {"id": "c02", "images": ["imagesUnlabeled/c02_0000.nrrd"], "label": null, "role": "unlabeled"},
        {"id": "c03", "images": ["dicom/c03/"], "label": "labelsVal/c03.nii.gz", "role": "validation"},
        {"id": "c04", "images": ["imagesTs/c04_0000.nii.gz"], "label": "labelsTs/c04.nii.gz", "role": "test"}
      ],
      "preprocessing": {"target_spacing": [1.0, 1.0, 2.5], "normalization": ["zscore"]}   # optional
    }

(paths relative to the manifest's folder); a folder is read through :data:`~lightunetr_core.vocabulary.ROLE_FOLDERS`
(``imagesTr/ labelsTr/ imagesUnlabeled/ imagesVal/ labelsVal/ imagesTs/ labelsTs/``) — see ``docs/datasets.md``.
Only the structure is checked here; :mod:`.validation` reads the files.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightunetr_core.vocabulary import ROLE_FOLDERS, ROLES, ROLES_NEEDING_LABEL, InputError, strip_image_extension

__all__ = ["DatasetError", "CaseSpec", "DatasetSpec", "load_manifest", "load_datalist", "discover_folder",
           "load_dataset_spec", "is_datalist"]


class DatasetError(InputError):
    """The dataset cannot be used. ``problems`` lists every problem found, each naming the case and the fix."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"dataset {source}: " if source else "dataset: "
        head += f"{len(self.problems)} problem(s) found; nothing was written.\n"
        super().__init__(head + "\n".join(f"  - {p}" for p in self.problems))


@dataclass
class CaseSpec:
    id: str
    images: list[Path]
    label: Path | None
    role: str


@dataclass
class DatasetSpec:
    name: str
    modalities: list[str]
    labels: dict[int, str]
    cases: list[CaseSpec]
    preprocessing: dict = field(default_factory=dict)
    source: str = ""

    def by_role(self, role: str) -> list[CaseSpec]:
        return [c for c in self.cases if c.role == role]


def _read_structured(path: Path) -> Any:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # optional
        except ImportError:
            raise DatasetError([f"{path}: YAML manifests need PyYAML (pip install pyyaml), or write the manifest as JSON"], str(path)) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DatasetError([f"{path}: not valid YAML ({exc}); fix the syntax"], str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError([f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix the syntax"], str(path)) from None


def _parse_labels(raw: Any, where: str, problems: list[str]) -> dict[int, str]:
    labels: dict[int, str] = {}
    if not isinstance(raw, dict) or not raw:
        problems.append(f'{where}: "labels" must be a mapping like {{"0": "background", "1": "organ"}}')
        return labels
    for key, value in raw.items():
        # Accept ours ("1": "organ") and nnU-Net's ("organ": 1).
        if isinstance(value, int) and not str(key).lstrip("-").isdigit():
            key, value = value, key
        try:
            k = int(key)
        except (TypeError, ValueError):
            problems.append(f'{where}: label key {key!r} is not an integer; write labels as {{"<value>": "<name>"}}')
            continue
        if not 0 <= k <= 255:
            problems.append(f"{where}: label value {k} is outside 0..255; renumber the classes")
            continue
        labels[k] = str(value)
    if labels and 0 not in labels:
        problems.append(f'{where}: "labels" has no background entry; add "0": "background"')
    if labels and sorted(labels) != list(range(len(labels))):
        problems.append(f"{where}: label values {sorted(labels)} are not consecutive 0..{len(labels) - 1}; renumber the classes (and the label files)")
    return labels


_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def is_datalist(data) -> bool:
    """A Medical Segmentation Decathlon / MONAI datalist: ``training`` (and optionally ``validation``,
    ``test``) lists instead of our ``cases``."""
    return isinstance(data, dict) and "cases" not in data and isinstance(data.get("training"), list)


def _datalist_case_id(image: str) -> str:
    stem = strip_image_extension(Path(image).name) or Path(image).name
    m = _CHANNEL_SUFFIX.match(stem)
    return m.group("case") if m else stem


def load_datalist(path: str | os.PathLike, fold: int | None = None) -> DatasetSpec:
    """A Decathlon / MONAI datalist (``dataset.json`` of the Medical Segmentation Decathlon) read with MONAI's
    own :func:`monai.data.load_decathlon_datalist`: ``training`` entries with a label are labelled cases, without
    one unlabelled, ``validation`` entries validation cases, ``test`` entries test cases. With ``fold`` the
    training entries whose ``"fold"`` is that number become the validation cases (cross-validation datalists).
    ``modality`` ({"0": "MRI"}) names the channels, ``labels`` the classes."""
    from monai.data import load_decathlon_datalist

    path = Path(path)
    where = str(path)
    data = _read_structured(path)
    problems: list[str] = []
    modality = data.get("modality") or data.get("modalities") or data.get("channel_names") or {"0": "MR"}
    modalities = [modality[k] for k in sorted(modality, key=int)] if isinstance(modality, dict) else list(modality)
    labels = _parse_labels(data.get("labels"), where, problems)
    cases: list[CaseSpec] = []
    entries = {}
    for key in ("training", "validation", "test"):
        if isinstance(data.get(key), list) and data[key]:
            try:
                entries[key] = load_decathlon_datalist(path, is_segmentation=True, data_list_key=key, base_dir=path.parent)
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f'{where}: "{key}" list cannot be read ({exc})')
    folds = {e.get("fold") for e in entries.get("training", [])}
    if fold is not None and fold not in folds:
        problems.append(f"{where}: --fold {fold} but the training entries have fold(s) {sorted(f for f in folds if f is not None)}"
                        if folds - {None} else f'{where}: --fold {fold} but the training entries have no "fold" field')
    seen: set[str] = set()
    for key, items in entries.items():
        for n, item in enumerate(items):
            images = item.get("image")
            images = [images] if isinstance(images, str) else list(images or [])
            if not images:
                problems.append(f'{where}: {key}[{n}] has no "image"')
                continue
            if len(images) != len(modalities):
                problems.append(f"{where}: {key}[{n}] has {len(images)} image(s) but {len(modalities)} modalities {modalities}")
            label = item.get("label") if isinstance(item.get("label"), str) else None
            if key == "training":
                role = ("validation" if fold is not None and item.get("fold") == fold else "labeled") if label else "unlabeled"
            else:
                role = key
            if role in ROLES_NEEDING_LABEL and not label:
                problems.append(f"{where}: {key}[{n}] ({images[0]}) needs a label for role {role!r}")
            cid = _datalist_case_id(images[0])
            if cid in seen:
                cid = f"{cid}-{key}-{n}"
            seen.add(cid)
            cases.append(CaseSpec(cid, [Path(p) for p in images], Path(label) if label else None, role))
    if not cases and not problems:
        problems.append(f'{where}: the "training" list is empty')
    if problems:
        raise DatasetError(problems, where)
    return DatasetSpec(str(data.get("name", path.parent.name)), [str(m) for m in modalities], labels, cases,
                       data.get("preprocessing") or {}, where)


def load_manifest(path: str | os.PathLike, fold: int | None = None) -> DatasetSpec:
    """Parse a manifest file (ours, or a Decathlon / MONAI datalist: :func:`load_datalist`). Raises
    :class:`DatasetError` listing every structural problem."""
    path = Path(path)
    data = _read_structured(path)
    where = str(path)
    problems: list[str] = []
    if is_datalist(data):
        return load_datalist(path, fold)
    if fold is not None:
        raise DatasetError([f"{where}: --fold needs a Decathlon / MONAI datalist with \"fold\" entries"], where)
    if not isinstance(data, dict):
        raise DatasetError([f"{where}: the manifest must be a JSON object with name, modalities, labels and cases"], where)
    root = path.parent
    modalities = data.get("modalities", ["MR"])
    if not isinstance(modalities, list) or not modalities or not all(isinstance(m, str) for m in modalities):
        problems.append(f'{where}: "modalities" must be a list of names, one per image channel, e.g. ["MR"] or ["CT"]')
        modalities = ["MR"]
    labels = _parse_labels(data.get("labels"), where, problems)
    raw_cases = data.get("cases")
    cases: list[CaseSpec] = []
    if not isinstance(raw_cases, list) or not raw_cases:
        problems.append(f'{where}: "cases" must be a non-empty list of {{"id", "images", "label", "role"}} entries')
        raw_cases = []
    seen: set[str] = set()
    for n, raw in enumerate(raw_cases):
        if not isinstance(raw, dict):
            problems.append(f"{where}: cases[{n}] is not an object")
            continue
        cid = str(raw.get("id", f"#{n}"))
        tag = f"case {cid!r}"
        if "id" not in raw:
            problems.append(f'{tag} (cases[{n}]): no "id"; give every case a unique id')
        if cid in seen:
            problems.append(f"{tag}: id used twice; case ids must be unique")
        seen.add(cid)
        role = raw.get("role", "labeled" if raw.get("label") else "unlabeled")
        if role not in ROLES:
            problems.append(f'{tag}: role {role!r} is not one of {", ".join(ROLES)}')
            role = "unlabeled"
        images = raw.get("images", raw.get("image"))
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            problems.append(f'{tag}: "images" must be a list of paths (one per modality)')
            images = []
        elif len(images) != len(modalities):
            problems.append(
                f"{tag}: {len(images)} image(s) but {len(modalities)} modalities {modalities}; list one image per modality in the same order"
            )
        label = raw.get("label")
        if label is not None and not isinstance(label, str):
            problems.append(f'{tag}: "label" must be a path or null')
            label = None
        if role in ROLES_NEEDING_LABEL and not label:
            problems.append(f'{tag}: role "{role}" needs a label; add "label": "<path>" or make the case "unlabeled"')
        cases.append(CaseSpec(cid, [root / p for p in images], root / label if label else None, role))
    preprocessing = data.get("preprocessing") or {}
    if not isinstance(preprocessing, dict):
        problems.append(f'{where}: "preprocessing" must be an object like {{"target_spacing": [1, 1, 2.5]}}')
        preprocessing = {}
    if problems:
        raise DatasetError(problems, where)
    return DatasetSpec(str(data.get("name", path.parent.name)), list(modalities), labels, cases, preprocessing, where)


def _scan_images(folder: Path) -> dict[str, dict[int, Path]]:
    """case id → {channel: path}. Files ``<case>_<XXXX>.<ext>`` or ``<case>.<ext>``; sub-folders are DICOM series."""
    found: dict[str, dict[int, Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        stem = entry.name if entry.is_dir() else strip_image_extension(entry.name)
        if stem is None:
            continue
        m = _CHANNEL_SUFFIX.match(stem)
        case, channel = (m.group("case"), int(m.group("channel"))) if m else (stem, 0)
        found.setdefault(case, {})[channel] = entry
    return found


def _scan_labels(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        stem = None if entry.name.startswith(".") or entry.is_dir() else strip_image_extension(entry.name)
        if stem is not None:
            found[stem] = entry
    return found


def discover_folder(folder: str | os.PathLike) -> DatasetSpec:
    """Describe a dataset from its folder layout (see ``docs/datasets.md``).

    A manifest in the folder (``dataset.json``/``manifest.json``/``dataset.yaml`` with a ``cases`` list)
    takes precedence. Otherwise ``imagesTr``+``labelsTr`` are labelled cases, ``imagesUnlabeled`` unlabelled,
    ``imagesVal``+``labelsVal`` validation and ``imagesTs`` (+``labelsTs``) test cases. Image files are
    ``<case>_<channel:04d>.<ext>`` (or ``<case>.<ext>`` for one channel), label files ``<case>.<ext>``.
    Class names come from ``labels`` in an nnU-Net-style ``dataset.json`` (``channel_names``, ``labels``)
    when present, otherwise from the label values found (``class_<k>``); modalities from
    ``channel_names``/``modalities`` there, otherwise MR.
    """
    folder = Path(folder)
    where = str(folder)
    meta: dict = {}
    for name in ("dataset.json", "manifest.json", "dataset.yaml", "dataset.yml"):
        candidate = folder / name
        if candidate.is_file():
            meta = _read_structured(candidate)
            if isinstance(meta, dict) and ("cases" in meta or is_datalist(meta)):
                return load_manifest(candidate)
            break
    if not isinstance(meta, dict):
        meta = {}
    problems: list[str] = []
    cases: list[CaseSpec] = []
    n_channels = None
    for role, (image_dirs, label_dirs) in ROLE_FOLDERS.items():
        image_dir = next((folder / d for d in image_dirs if (folder / d).is_dir()), None)
        if image_dir is None:
            continue
        label_dir = next((folder / d for d in label_dirs if (folder / d).is_dir()), None)
        images = _scan_images(image_dir)
        labels = _scan_labels(label_dir) if label_dir else {}
        for cid, channels in images.items():
            want = list(range(max(channels) + 1))
            if sorted(channels) != want:
                problems.append(f"case {cid!r} ({image_dir.name}): channel files {sorted(channels)} are not 0..{max(channels)}; name them {cid}_0000, {cid}_0001, ...")
                continue
            if n_channels is None:
                n_channels = len(want)
            elif len(want) != n_channels:
                problems.append(f"case {cid!r} ({image_dir.name}): {len(want)} channel file(s), other cases have {n_channels}; every case needs the same modalities")
            label = labels.get(cid)
            if role in ROLES_NEEDING_LABEL and label is None:
                expected = (label_dir or folder / label_dirs[0]).name
                problems.append(f"case {cid!r}: {image_dir.name} has its image but {expected}/ has no {cid}.<ext> label; add the label or move the image to imagesUnlabeled/")
            cases.append(CaseSpec(cid, [channels[c] for c in want], label, role))
        orphans = sorted(set(labels) - set(images))
        for cid in orphans:
            problems.append(f"{label_dir.name}/{labels[cid].name}: label without an image (expected {image_dir.name}/{cid}_0000.<ext>); add the image or remove the label")
    if not cases and not problems:
        problems.append(
            f"{where}: no cases found; put images in imagesTr/ (labels in labelsTr/), unlabelled images in imagesUnlabeled/, "
            "or pass a manifest .json file"
        )
    n_channels = n_channels or 1
    modalities = meta.get("modalities") or meta.get("channel_names") or meta.get("modality")
    if isinstance(modalities, dict):
        modalities = [modalities[k] for k in sorted(modalities, key=lambda k: int(k))]
    if not isinstance(modalities, list) or len(modalities) != n_channels:
        modalities = ["MR"] * n_channels
    labels_decl: dict[int, str] = {}
    if "labels" in meta:
        labels_decl = _parse_labels(meta["labels"], where, problems)
    if problems:
        raise DatasetError(problems, where)
    spec = DatasetSpec(str(meta.get("name", folder.name)), [str(m) for m in modalities], labels_decl, cases,
                       meta.get("preprocessing") or {}, where)
    return spec


def load_dataset_spec(manifest_or_folder: str | os.PathLike | DatasetSpec, fold: int | None = None) -> DatasetSpec:
    if isinstance(manifest_or_folder, DatasetSpec):
        return manifest_or_folder
    p = Path(manifest_or_folder)
    if p.is_dir():
        for name in ("dataset.json", "manifest.json"):
            if fold is not None and (p / name).is_file():
                return load_manifest(p / name, fold)
        return discover_folder(p)
    if p.is_file():
        return load_manifest(p, fold)
    raise DatasetError([f"{p}: no such manifest file or dataset folder; check the path"], str(p))
