"""Stage a checked dataset: preprocess every case once into an on-disk cache and read it back memory-mapped.

:func:`prepare_dataset` runs the whole path — describe (:mod:`.manifest`), check (:mod:`.validation`), plan
(:mod:`.planning`), cache — and raises one :class:`~.manifest.DatasetError` listing every problem per case
before anything is written. Each case is reoriented, resampled and normalised with
:func:`~lightunetr_core.data.preprocessing.preprocess_case` and cached as ``.npy`` arrays, keyed by a hash of the
source files' (path, size, mtime) and the preprocessing plan, so a second run reuses them.
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
from lightunetr_core.data.manifest import CaseSpec, DatasetError, DatasetSpec, load_dataset_spec
from lightunetr_core.data.planning import labeled_spacings, make_default_plan
from lightunetr_core.data.preprocessing import preprocess_case
from lightunetr_core.data.validation import check_case_content, check_counts, check_headers, labels_from_files

__all__ = ["PreparedCase", "PreparedDataset", "prepare_dataset", "CACHE_VERSION"]

#: Bump when the cached array format or the preprocessing code changes meaning.
CACHE_VERSION = 1
#: At most this many foreground voxel positions per class are kept per case for oversampling.
MAX_CLASS_LOCATIONS = 20000


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
        # An unlabelled case's label (kept aside for a benchmark) is not cached: the same case used as a labelled
        # one later must not find this entry.
        "label": _file_fingerprint(case.label) if case.label and case.role != "unlabeled" else None,
        "plan": plan_dict,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", case_id)[:60]


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
    spec = load_dataset_spec(manifest_or_folder, fold)  # describe
    cache_dir = Path(cache_dir)
    warnings: list[str] = []
    if events is not None:
        events.stage("validate", f"checking {len(spec.cases)} case(s) of {spec.name}")
    problems = check_counts(spec, labeled_batch_size, unlabeled_batch_size, require_unlabeled)  # check
    headers, header_problems = check_headers(spec)
    problems += header_problems
    if not spec.labels:
        problems += labels_from_files(spec, set(headers))
    if plan is None:  # plan
        try:
            plan = make_default_plan(spec, labeled_spacings(spec, headers))
        except DatasetError as exc:
            raise DatasetError(problems + exc.problems, spec.source) from None
    if plan.channels != len(spec.modalities):
        problems.append(f"the preprocessing plan has {plan.channels} channel(s) but the dataset has {len(spec.modalities)} modalities {spec.modalities}; use a plan with one normalization per modality")
        raise DatasetError(problems, spec.source)
    plan_dict = _plan_dict(plan)

    # cache: the content of every case not already cached (read fully), preprocessed into a staging folder
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
            if case.id not in headers:
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
            loaded = check_case_content(case, spec, problems, case_warnings)
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
        # Everything is valid: move staged entries into the cache (each rename is atomic).
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
