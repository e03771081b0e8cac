"""Training datasets: manifest / folder discovery, validation, preprocessing with an on-disk cache.

A dataset is described either by a JSON manifest (YAML too when PyYAML is installed)::

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

(paths relative to the manifest's folder), or by a folder laid out as ``imagesTr/ labelsTr/
imagesUnlabeled/ imagesVal/ labelsVal/ imagesTs/ labelsTs/`` — see ``docs/datasets.md``.

:func:`prepare_dataset` checks everything first (files, readability, 3-D scalar volumes, NaN, label
geometry = image geometry, label values ⊂ declared classes, enough cases) and raises one
:class:`DatasetError` listing every problem per case — before anything is written. It then
reorients/resamples/normalises each case with :func:`lightunetr_core.data.preprocessing.preprocess_case`
and caches the arrays as ``.npy`` (memory-mapped when read back), keyed by a hash of the source
files' (path, size, mtime) and the preprocessing plan, so a second run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightunetr_core.atomic import atomic_output

__all__ = [
    "DatasetError",
    "CaseSpec",
    "DatasetSpec",
    "PreparedCase",
    "PreparedDataset",
    "load_manifest",
    "discover_folder",
    "load_dataset_spec",
    "prepare_dataset",
    "ROLES",
    "CACHE_VERSION",
]

ROLES = ("labeled", "unlabeled", "validation", "test")
#: Roles whose cases must have a label.
ROLES_NEEDING_LABEL = ("labeled", "validation")
#: Bump when the cached array format or the preprocessing code changes meaning.
CACHE_VERSION = 1
#: At most this many foreground voxel positions per class are kept per case for oversampling.
MAX_CLASS_LOCATIONS = 20000

FOLDER_ROLES = {
    # role: (image folder names accepted, label folder names accepted)
    "labeled": (("imagesTr",), ("labelsTr",)),
    "unlabeled": (("imagesUnlabeled", "imagesTrUnlabeled", "imagesUnlabelled"), ()),
    "validation": (("imagesVal",), ("labelsVal",)),
    "test": (("imagesTs",), ("labelsTs",)),
}


class DatasetError(ValueError):
    """The dataset cannot be used. ``problems`` lists every problem found, each naming the case and the fix."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"dataset {source}: " if source else "dataset: "
        head += f"{len(self.problems)} problem(s) found; nothing was written.\n"
        super().__init__(head + "\n".join(f"  - {p}" for p in self.problems))


# ----------------------------------------------------------------------------------------------
# dataset description


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


def is_datalist(data) -> bool:
    """A Medical Segmentation Decathlon / MONAI datalist: ``training`` (and optionally ``validation``,
    ``test``) lists instead of our ``cases``."""
    return isinstance(data, dict) and "cases" not in data and isinstance(data.get("training"), list)


def _datalist_case_id(image: str) -> str:
    stem = _strip_image_ext(Path(image).name) or Path(image).name
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


_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _strip_image_ext(name: str) -> str | None:
    from lightunetr_core.data.io import IMAGE_EXTENSIONS

    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return None


def _scan_images(folder: Path) -> dict[str, dict[int, Path]]:
    """case id → {channel: path}. Files ``<case>_<XXXX>.<ext>`` or ``<case>.<ext>``; sub-folders are DICOM series."""
    found: dict[str, dict[int, Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        stem = entry.name if entry.is_dir() else _strip_image_ext(entry.name)
        if stem is None:
            continue
        m = _CHANNEL_SUFFIX.match(stem)
        case, channel = (m.group("case"), int(m.group("channel"))) if m else (stem, 0)
        found.setdefault(case, {})[channel] = entry
    return found


def _scan_labels(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        stem = None if entry.name.startswith(".") or entry.is_dir() else _strip_image_ext(entry.name)
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
    for role, (image_dirs, label_dirs) in FOLDER_ROLES.items():
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


# ----------------------------------------------------------------------------------------------
# prepared dataset


@dataclass
class PreparedCase:
    """One preprocessed case: ``image`` C×X×Y×Z float32 (memory-mapped), ``label`` X×Y×Z uint8 or None."""

    id: str
    role: str
    image: np.ndarray
    label: np.ndarray | None
    volume_min: np.ndarray  # (C,) float32, of the whole preprocessed volume
    volume_max: np.ndarray  # (C,)
    class_locations: dict[int, np.ndarray]  # class → (n, 3) int voxel indices (subsampled)
    source_images: list[Path]
    source_label: Path | None
    cache_path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])


@dataclass
class PreparedDataset:
    name: str
    plan: Any  # lightunetr_core.data.preprocessing.PreprocessingPlan
    labels: dict[int, str]
    modalities: list[str]
    labeled: list[PreparedCase]
    unlabeled: list[PreparedCase]
    validation: list[PreparedCase]
    test: list[CaseSpec]  # not preprocessed: test cases are segmented from their source files
    cache_dir: Path
    stats: dict = field(default_factory=dict)  # {"preprocessed": n, "cached": m}

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    def cases(self, role: str) -> list[PreparedCase]:
        return {"labeled": self.labeled, "unlabeled": self.unlabeled, "validation": self.validation}[role]


def _file_fingerprint(path: Path) -> list:
    path = Path(path)
    if path.is_dir():  # DICOM series folder: every file counts
        entries = []
        for f in sorted(path.rglob("*")):
            if f.is_file():
                st = f.stat()
                entries.append([str(f.relative_to(path)), st.st_size, st.st_mtime_ns])
        return [str(path.resolve()), entries]
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _plan_dict(plan) -> dict:
    if hasattr(plan, "to_dict"):
        return plan.to_dict()
    import dataclasses

    if dataclasses.is_dataclass(plan):
        return json.loads(json.dumps(dataclasses.asdict(plan), default=str))
    return json.loads(json.dumps(vars(plan), default=str))


def _cache_key(case: CaseSpec, plan_dict: dict) -> str:
    payload = {
        "version": CACHE_VERSION,
        "images": [_file_fingerprint(p) for p in case.images],
        "label": _file_fingerprint(case.label) if case.label else None,
        "plan": plan_dict,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", case_id)[:60]


def _ras_spacing(info_direction, spacing) -> tuple[float, float, float]:
    from lightunetr_core.data.geometry import Reorientation

    perm = Reorientation.for_direction(info_direction).permutation
    return tuple(float(spacing[p]) for p in perm)


def _class_locations(label: np.ndarray, classes, rng: np.random.Generator) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    flat = label.ravel()
    for k in classes:
        if k == 0:
            continue
        idx = np.flatnonzero(flat == k)
        if idx.size > MAX_CLASS_LOCATIONS:
            idx = np.sort(rng.choice(idx, MAX_CLASS_LOCATIONS, replace=False))
        out[int(k)] = np.stack(np.unravel_index(idx, label.shape), axis=1).astype(np.int32)
    return out


def _check_case_content(case: CaseSpec, spec: DatasetSpec, problems: list[str], warnings: list[str]):
    """Read a case fully and check it. Returns (sitk images, sitk label or None) or None if unusable.
    Problems make the case unusable; warnings (a constant image, an empty label) are reported only."""
    import SimpleITK as sitk

    from lightunetr_core.data.geometry import Geometry
    from lightunetr_core.data.io import ImageReadError, image_warnings, read_image

    tag = f"case {case.id!r}"
    images = []
    ok = True
    for n, path in enumerate(case.images):
        try:
            images.append(read_image(path))
        except ImageReadError as exc:
            problems.append(f"{tag}: {exc}")
            ok = False
        else:
            warnings += image_warnings(images[-1], f"{tag}: {path.name}")
    if ok and len(images) > 1:
        g0 = Geometry.of(images[0])
        for n, img in enumerate(images[1:], start=1):
            g = Geometry.of(img)
            if not g.matches(g0):
                problems.append(
                    f"{tag}: image {n} ({case.images[n].name}, {spec.modalities[n] if n < len(spec.modalities) else '?'}) has a different grid "
                    f"from image 0 ({g.describe()} vs {g0.describe()}); register/resample all modalities of a case onto one grid"
                )
                ok = False
    label = None
    if case.label is not None and case.role != "unlabeled":
        try:
            label = read_image(case.label)
        except ImageReadError as exc:
            problems.append(f"{tag}: label {exc}")
            return None
        if images and ok:
            gi, gl = Geometry.of(images[0]), Geometry.of(label)
            if not gl.matches(gi):
                problems.append(
                    f"{tag}: label {case.label.name} does not lie on the image grid (label {gl.describe()}; image {gi.describe()}); "
                    "resample the label onto the image (nearest neighbour), or if only the header is wrong copy the image's "
                    "spacing/origin/direction into the label"
                )
                ok = False
        arr = sitk.GetArrayViewFromImage(label)
        values = np.unique(arr)
        if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
            problems.append(f"{tag}: label {case.label.name} has non-integer values (e.g. {values[values != np.round(values)][:3].tolist()}); save it as an integer label map")
            ok = False
        else:
            declared = set(spec.labels)
            bad = [int(v) for v in values if int(v) not in declared]
            if bad:
                problems.append(
                    f"{tag}: label {case.label.name} contains value(s) {bad[:10]} not declared in labels {sorted(declared)}; "
                    "declare them in the manifest's \"labels\" or remap the label map"
                )
                ok = False
            elif case.role == "labeled" and values.max(initial=0) == 0:
                # True negatives (lesion data: scans without a lesion) are valid training cases.
                warnings.append(f"{tag}: label {case.label.name} is empty (all background); used as a case without "
                                "the structures (true negative)")
    return (images, label) if ok else None


def _label_values(entry: Path) -> list[int]:
    return json.loads((entry / "meta.json").read_text()).get("label_values", [])


def _write_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array))


def _load_cached(entry: Path, case: CaseSpec) -> PreparedCase:
    meta = json.loads((entry / "meta.json").read_text())
    image = np.load(entry / "image.npy", mmap_mode="r")
    label = np.load(entry / "label.npy", mmap_mode="r") if (entry / "label.npy").exists() else None
    locations = {}
    if (entry / "locations.npz").exists():
        with np.load(entry / "locations.npz") as z:
            locations = {int(k.split("_")[1]): z[k] for k in z.files}
    return PreparedCase(
        case.id, case.role, image, label,
        np.asarray(meta["volume_min"], dtype=np.float32), np.asarray(meta["volume_max"], dtype=np.float32),
        locations, list(case.images), case.label, entry,
    )


def _cache_entry_valid(entry: Path) -> bool:
    return (entry / "meta.json").is_file() and (entry / "image.npy").is_file()


def normalization_for_modality(modality: str):
    """Default intensity normalisation of one channel: CT → clip to [-125, 275] HU and scale to [0, 1]
    (the Pancreas-CT recipe); everything else (MR, PET, ...) → z-score over the whole volume."""
    from lightunetr_core.data.preprocessing import IntensityNormalization

    if modality.strip().upper() == "CT":
        return IntensityNormalization(kind="ct", window=(-125.0, 275.0), output_range=(0.0, 1.0))
    return IntensityNormalization(kind="zscore")


def make_default_plan(spec: DatasetSpec, labeled_spacings: list[tuple[float, float, float]]):
    """The plan used when none is given.

    ``target_spacing``: the manifest's ``preprocessing.target_spacing``, otherwise the median (per
    canonical RAS axis) of the labelled cases' spacings. ``normalization``: the manifest's
    ``preprocessing.normalization`` (one entry per modality: a kind name such as ``"zscore"``/``"ct"``
    or a dict of :class:`~lightunetr_core.data.preprocessing.IntensityNormalization` fields), otherwise
    :func:`normalization_for_modality`.
    """
    from lightunetr_core.data.preprocessing import IntensityNormalization, PreprocessingPlan

    section = dict(spec.preprocessing or {})
    problems: list[str] = []
    target = section.get("target_spacing")
    if target is None and labeled_spacings:
        target = [round(float(v), 6) for v in np.median(np.asarray(labeled_spacings, dtype=float), axis=0)]
    norms = section.get("normalization")
    if norms is None:
        normalization = [normalization_for_modality(m) for m in spec.modalities]
    else:
        if not isinstance(norms, list):
            norms = [norms] * len(spec.modalities)
        normalization = []
        if len(norms) != len(spec.modalities):
            problems.append(f'preprocessing.normalization has {len(norms)} entries for {len(spec.modalities)} modalities; give one per modality')
        for n in norms:
            try:
                normalization.append(IntensityNormalization(kind=n) if isinstance(n, str) else IntensityNormalization.from_dict(n))
            except (ValueError, TypeError) as exc:
                problems.append(f"preprocessing.normalization entry {n!r}: {exc}")
    try:
        plan = PreprocessingPlan(target_spacing=target, normalization=normalization or [IntensityNormalization()])
    except ValueError as exc:
        problems.append(f"preprocessing: {exc}")
    if problems:
        raise DatasetError(problems, spec.source)
    return plan


def prepare_dataset(
    manifest_or_folder: str | os.PathLike | DatasetSpec,
    cache_dir: str | os.PathLike,
    plan=None,
    events=None,
    labeled_batch_size: int = 1,
    unlabeled_batch_size: int = 0,
    require_unlabeled: bool = False,
    fold: int | None = None,
) -> PreparedDataset:
    """Validate, preprocess (or load from cache) and return the dataset.

    Args:
        manifest_or_folder: manifest file (.json, or .yaml with PyYAML), dataset folder, or a :class:`DatasetSpec`.
        cache_dir: folder for the preprocessed ``.npy`` cache (created on success only).
        plan: a :class:`~lightunetr_core.data.preprocessing.PreprocessingPlan`; ``None`` → :func:`make_default_plan`.
        events: optional :class:`~lightunetr_core.jobs.EventWriter` (stage/progress/log events).
        labeled_batch_size / unlabeled_batch_size: the training batch; fewer cases is an error.
        require_unlabeled: semi-supervised training needs at least one unlabelled case.
        fold: with a Decathlon / MONAI datalist, the training entries of this fold are the validation cases.

    Raises:
        DatasetError: listing every problem (per case) with its fix; nothing is written in that case.
    """
    import SimpleITK as sitk  # noqa: F401  (fail early if missing)

    from lightunetr_core.data.io import ImageReadError, inspect_image
    from lightunetr_core.data.preprocessing import preprocess_case

    spec = load_dataset_spec(manifest_or_folder, fold)
    cache_dir = Path(cache_dir)
    problems: list[str] = []
    warnings: list[str] = []

    if events is not None:
        events.stage("validate", f"checking {len(spec.cases)} case(s) of {spec.name}")

    # 1. Counts.
    n_lab = len(spec.by_role("labeled"))
    n_unlab = len(spec.by_role("unlabeled"))
    if n_lab == 0:
        problems.append('no labelled case: at least one case needs role "labeled" and a label (folder layout: imagesTr/ + labelsTr/)')
    elif n_lab < labeled_batch_size:
        problems.append(f"{n_lab} labelled case(s) but the batch needs {labeled_batch_size}; add labelled cases or lower the labelled batch size")
    if require_unlabeled and n_unlab == 0:
        problems.append('no unlabelled case: semi-supervised (CSE) training needs cases with role "unlabeled" (folder: imagesUnlabeled/); or train supervised only')
    elif n_unlab < unlabeled_batch_size:
        problems.append(f"{n_unlab} unlabelled case(s) but the batch needs {unlabeled_batch_size}; add unlabelled cases or lower the unlabelled batch size")
    if spec.labels == {} and n_lab:
        pass  # filled from the label files below (folder datasets without declared classes)

    # 2. Files exist, headers readable, 3-D; spacings for the default plan.
    header_ok: dict[str, bool] = {}
    labeled_spacings = []
    for case in spec.cases:
        tag = f"case {case.id!r}"
        ok = True
        infos = []
        for path in case.images + ([case.label] if case.label is not None and case.role != "unlabeled" else []):
            try:
                infos.append(inspect_image(path))
            except ImageReadError as exc:
                problems.append(f"{tag}: {exc}")
                ok = False
        header_ok[case.id] = ok
        if ok and case.role == "labeled" and infos[0].get("spacing") is not None:
            labeled_spacings.append(_ras_spacing(infos[0]["direction"], infos[0]["spacing"]))

    # Folder datasets without declared classes: use the values found in the label files.
    if not spec.labels:
        values: set[int] = {0}
        for case in spec.cases:
            if case.label is not None and header_ok.get(case.id) and case.role != "unlabeled":
                try:
                    from lightunetr_core.data.io import read_image
                    import SimpleITK as sitk

                    label_image = read_image(case.label)  # keep a reference: the array view needs the image alive
                    values |= {int(v) for v in np.unique(sitk.GetArrayViewFromImage(label_image))}
                except (ImageReadError, ValueError):
                    pass
        spec.labels = {v: ("background" if v == 0 else f"class_{v}") for v in sorted(values)}
        if sorted(spec.labels) != list(range(len(spec.labels))):
            problems.append(f"label values {sorted(spec.labels)} found in the label files are not consecutive 0..K; renumber them or declare \"labels\" in dataset.json")

    if plan is None:
        try:
            plan = make_default_plan(spec, labeled_spacings)
        except DatasetError as exc:
            raise DatasetError(problems + exc.problems, spec.source) from None
    if plan.channels != len(spec.modalities):
        problems.append(f"the preprocessing plan has {plan.channels} channel(s) but the dataset has {len(spec.modalities)} modalities {spec.modalities}; use a plan with one normalization per modality")
        raise DatasetError(problems, spec.source)
    plan_dict = _plan_dict(plan)

    # 3. Content of every case not already cached (read fully), preprocessing into a staging folder.
    roles_to_prepare = ("labeled", "unlabeled", "validation")
    todo = [c for c in spec.cases if c.role in roles_to_prepare]
    keys: dict[str, str] = {}
    staging: Path | None = None
    staged: dict[str, Path] = {}
    cached: dict[str, Path] = {}
    created_parent: Path | None = None
    succeeded = False
    class_rng = np.random.default_rng(0)
    try:
        for n, case in enumerate(todo):
            if not header_ok.get(case.id):
                continue
            key = _cache_key(case, plan_dict)
            keys[case.id] = key
            entry = cache_dir / f"{_safe_name(case.id)}-{key[:24]}"
            if _cache_entry_valid(entry):
                meta = json.loads((entry / "meta.json").read_text())
                bad = [v for v in meta.get("label_values", []) if v not in spec.labels]
                if bad:
                    problems.append(f"case {case.id!r}: label {case.label.name if case.label else ''} contains value(s) {bad} not declared in labels {sorted(spec.labels)}; declare them or remap the label map")
                warnings += meta.get("warnings", [])  # said when the case was read, kept with the cache
                cached[case.id] = entry
                continue
            case_warnings: list[str] = []
            loaded = _check_case_content(case, spec, problems, case_warnings)
            warnings += case_warnings
            if loaded is None or problems:
                continue  # keep checking the other cases, but write nothing
            images, label = loaded
            if events is not None:
                events.progress(n + 1, len(todo), stage="preprocess", case=case.id)
            try:
                pre = preprocess_case(images, plan, label)
            except ValueError as exc:
                problems.append(f"case {case.id!r}: preprocessing failed ({exc})")
                continue
            if staging is None:
                if not cache_dir.parent.exists():
                    # Remember the first missing ancestor so a failure removes what we created.
                    created_parent = next(p for p in [cache_dir.parent, *cache_dir.parent.parents][::-1] if not p.exists())
                    cache_dir.parent.mkdir(parents=True)
                staging = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.staging-", dir=cache_dir.parent))
            out = staging / entry.name
            out.mkdir()
            image = np.asarray(pre.image, dtype=np.float32)
            _write_npy_atomic(out / "image.npy", image)
            meta = {
                "id": case.id,
                "role": case.role,
                "shape": list(image.shape),
                "volume_min": image.reshape(image.shape[0], -1).min(axis=1).tolist(),
                "volume_max": image.reshape(image.shape[0], -1).max(axis=1).tolist(),
                "label_values": [],
                "sources": [str(p) for p in case.images],
                "label": str(case.label) if case.label else None,
                "plan": plan_dict,
                "cache_version": CACHE_VERSION,
                "warnings": case_warnings,
            }
            if pre.label is not None and case.role != "unlabeled":
                lab = np.asarray(pre.label, dtype=np.uint8)
                _write_npy_atomic(out / "label.npy", lab)
                meta["label_values"] = [int(v) for v in np.unique(lab)]
                locs = _class_locations(lab, spec.labels, class_rng)
                np.savez(out / "locations.npz", **{f"class_{k}": v for k, v in locs.items()})
            (out / "meta.json").write_text(json.dumps(meta, indent=1))
            staged[case.id] = out
        labeled_ids = {c.id for c in spec.by_role("labeled")}
        empty = [cid for cid in labeled_ids if cid in staged or cid in cached]
        empty = [cid for cid in empty if _label_values(staged.get(cid) or cached[cid]) == [0]]
        if labeled_ids and len(empty) == len(labeled_ids) and not problems:
            problems.append("every labelled case has an empty label (all background): there is nothing to learn; "
                            "draw the structures in at least one labelled case")
        if problems:
            raise DatasetError(problems, spec.source)
        # 4. Everything is valid: move staged entries into the cache (each rename is atomic).
        if staged:
            cache_dir.mkdir(parents=True, exist_ok=True)
            for cid, out in staged.items():
                final = cache_dir / out.name
                if final.exists():  # written concurrently by another run with the same key
                    shutil.rmtree(out)
                else:
                    os.replace(out, final)
                cached[cid] = final
        succeeded = True
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not succeeded and created_parent is not None:
            shutil.rmtree(created_parent, ignore_errors=True)

    prepared = {role: [] for role in roles_to_prepare}
    for case in todo:
        prepared[case.role].append(_load_cached(cached[case.id], case))
    for pc in prepared["labeled"] + prepared["validation"]:
        if pc.label is not None and not pc.class_locations:
            pc.class_locations = _class_locations(np.asarray(pc.label), spec.labels, class_rng)
    stats = {"preprocessed": len(staged), "cached": len(cached) - len(staged), "empty_labels": len(empty),
             "warnings": warnings}
    if events is not None:
        for warning in warnings:
            events.log(warning, level="warning")
        events.log(f"dataset {spec.name}: {stats['preprocessed']} case(s) preprocessed, {stats['cached']} reused from "
                   f"{cache_dir}; {len(empty)} labelled case(s) with an empty label, {len(warnings)} warning(s)")
    return PreparedDataset(
        spec.name, plan, dict(spec.labels), list(spec.modalities),
        prepared["labeled"], prepared["unlabeled"], prepared["validation"], spec.by_role("test"), cache_dir, stats,
    )
