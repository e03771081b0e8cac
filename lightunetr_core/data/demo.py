"""Synthetic 3-D segmentation task for demos and tests ("demo data").

Each case is a small MR-like volume (default 64×64×40 voxels at 1.0×1.0×2.5 mm) containing

* the **organ** (label 1): one large smooth blob — a randomly rotated ellipsoid whose surface is
  deformed by low-frequency waves — with a mottled fine-grained texture;
* optionally a **second structure** (label 2, ``classes=2``): a smaller ellipsoid touching the organ,
  with a coarse blotchy texture;
* **distractors** (label 0): tubes and small round blobs of *the same mean intensity* but smooth
  texture and a different shape, together about as large as the organ;
* a body outline, a smooth multiplicative bias field and Gaussian noise.

Because the distractors are as bright as the organ and the bias field moves intensities by ±25 %, no
global threshold separates the organ (best-threshold Dice stays well below 0.8); a network has to use
shape and texture.

The scene is defined in *physical* (LPS, millimetre) coordinates and then sampled on each case's voxel
grid, so cases written with a flipped or oblique direction matrix show the same anatomy in world
space — after reorientation the data is consistent, which is what geometry handling must preserve.
Some cases are written as NRRD, the rest as NIfTI.

Layout written by :func:`generate_demo_dataset`::

    OUT_DIR/
      dataset.json              manifest (roles labeled / unlabeled / validation / test)
      imagesTr/  labelsTr/      labelled training cases
      imagesUnlabeled/          unlabelled training cases (no labels written)
      imagesVal/ labelsVal/     validation cases
      imagesTs/  labelsTs/      held-out test cases (labels for scoring only)

Image files are named ``<case>_0000.<ext>`` (channel 0), label files ``<case>.<ext>``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightunetr_core.atomic import atomic_folder
from lightunetr_core.vocabulary import HELD_ASIDE_LABELS, ROLES, role_folders

DEFAULT_SHAPE = (64, 64, 40)
DEFAULT_SPACING = (1.0, 1.0, 2.5)



@dataclass
class DemoCase:
    """One generated case in memory. Arrays are indexed ``[x, y, z]`` (ITK index order i, j, k)."""

    id: str
    image: np.ndarray  # float32 X×Y×Z
    label: np.ndarray  # uint8 X×Y×Z
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray  # 3×3, columns = world (LPS) direction of index axes i, j, k
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# scene generation


def _rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """Random rotation about a random axis by at most ``max_angle_deg``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(-max_angle_deg, max_angle_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _smooth_noise(rng: np.random.Generator, shape, sigma_mm: float, spacing) -> np.ndarray:
    """Gaussian-filtered white noise with a physical correlation length, normalised to unit std."""
    from scipy.ndimage import gaussian_filter

    field_ = rng.standard_normal(shape).astype(np.float32)
    sigma = [sigma_mm / s for s in spacing]
    field_ = gaussian_filter(field_, sigma=sigma, mode="wrap")
    field_ -= field_.mean()
    std = field_.std()
    return field_ / std if std > 0 else field_


def _waves(rng: np.random.Generator, world: np.ndarray, n: int, wavelength_mm: float, amplitude: float):
    """Sum of ``n`` random plane waves evaluated at world points (…×3)."""
    out = np.zeros(world.shape[:-1], dtype=np.float32)
    for _ in range(n):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = direction * (2 * math.pi / (wavelength_mm * rng.uniform(0.7, 1.3)))
        out += np.float32(amplitude * rng.uniform(0.5, 1.0)) * np.sin(world @ k.astype(np.float32) + rng.uniform(0, 2 * math.pi)).astype(np.float32)
    return out


def _ellipsoid_radius(world: np.ndarray, centre, semi_axes, rotation) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) at world points."""
    local = (world - np.asarray(centre, dtype=np.float32)) @ rotation.astype(np.float32)
    return np.sqrt(((local / np.asarray(semi_axes, dtype=np.float32)) ** 2).sum(-1))


def _soft(inside_distance: np.ndarray, width: float) -> np.ndarray:
    """Smooth 0..1 indicator from a signed 'inside' distance (positive inside)."""
    z = np.clip(inside_distance / width, -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def _case_geometry(rng: np.random.Generator, index: int, shape, spacing, oblique_fraction: float):
    """Direction matrix: identity, flipped or oblique, cycling so every kind appears in small sets."""
    kind = ["identity", "flipped", "identity", "oblique"][index % 4]
    if kind == "oblique" and rng.uniform() > oblique_fraction * 4:
        kind = "identity"
    if kind == "flipped":
        direction = np.diag([-1.0, 1.0, -1.0]) if index % 8 == 1 else np.diag([-1.0, -1.0, 1.0])
    elif kind == "oblique":
        angle = math.radians(rng.uniform(10, 20)) * (1 if rng.uniform() < 0.5 else -1)
        c, s = math.cos(angle), math.sin(angle)
        direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    else:
        direction = np.eye(3)
    extent = direction @ (np.asarray(spacing) * (np.asarray(shape) - 1))
    origin = -extent / 2.0  # centre of the volume at world (0, 0, 0)
    return kind, direction, origin


def generate_case(
    case_id: str,
    seed: int,
    index: int = 0,
    shape=DEFAULT_SHAPE,
    spacing=DEFAULT_SPACING,
    classes: int = 1,
    oblique_fraction: float = 0.25,
) -> DemoCase:
    """Generate one case deterministically from ``seed``."""
    if classes not in (1, 2):
        raise ValueError(f"classes must be 1 or 2 (foreground classes), got {classes}")
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    kind, direction, origin = _case_geometry(rng, index, shape, spacing, oblique_fraction)

    # World (LPS mm) coordinate of every voxel: origin + D · diag(spacing) · index.
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    idx = np.stack(grids, axis=-1)
    world = (idx * np.asarray(spacing, dtype=np.float32)) @ (direction.T.astype(np.float32)) + origin.astype(np.float32)

    half = np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0  # half extent in mm (axis-aligned frame)
    label = np.zeros(shape, dtype=np.uint8)

    # Body: a large ellipse in x/y, open in z; air outside.
    body_r = _ellipsoid_radius(world[..., :2], (0.0, 0.0), (half[0] * rng.uniform(0.88, 0.98), half[1] * rng.uniform(0.78, 0.9)), np.eye(2))
    body = _soft((1.0 - body_r) * 20.0, 1.0)

    # Organ: deformed rotated ellipsoid.
    organ_centre = np.array([rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-8, 8)])
    organ_axes = np.array([rng.uniform(11, 15), rng.uniform(8, 11), rng.uniform(16, 22)])
    organ_rot = _rotation(rng, 35)
    organ_r = _ellipsoid_radius(world, organ_centre, organ_axes, organ_rot)
    organ_r = organ_r + _waves(rng, world, 4, 30.0, 0.10)
    organ_in = (1.0 - organ_r) * organ_axes.min()  # approx. mm inside the surface
    organ_soft = _soft(organ_in, 0.6)
    label[organ_in > 0] = 1

    # Optional second structure: a smaller ellipsoid touching the organ.
    second_soft = np.zeros(shape, dtype=np.float32)
    if classes == 2:
        theta = rng.uniform(0, 2 * math.pi)
        offset = np.array([math.cos(theta), math.sin(theta), rng.uniform(-0.3, 0.3)])
        offset /= np.linalg.norm(offset)
        second_axes = np.array([rng.uniform(6, 8), rng.uniform(6, 8), rng.uniform(8, 12)])
        reach = np.linalg.norm(organ_axes * np.abs(offset)) * 0.8 + second_axes[0] * 0.6
        second_centre = organ_centre + offset * reach
        second_r = _ellipsoid_radius(world, second_centre, second_axes, _rotation(rng, 30))
        second_r = second_r + _waves(rng, world, 2, 20.0, 0.06)
        second_in = (1.0 - second_r) * second_axes.min()
        second_soft = _soft(second_in, 0.6)
        label[second_in > 0] = 2

    # Distractors: tubes and small blobs, as bright as the organ, away from its centre.
    distractor = np.zeros(shape, dtype=np.float32)
    n_tubes = int(rng.integers(2, 4))
    for _ in range(n_tubes):
        axis = rng.normal(size=3)
        axis[2] *= 2.0  # mostly cranio-caudal vessels
        axis /= np.linalg.norm(axis)
        for _attempt in range(20):
            point = np.array([rng.uniform(-0.75, 0.75) * half[0], rng.uniform(-0.7, 0.7) * half[1], 0.0])
            rel = organ_centre - point
            dist_to_axis = np.linalg.norm(rel - (rel @ axis) * axis)
            if dist_to_axis > organ_axes.max() * 0.7 + 6:
                break
        radius = rng.uniform(3.5, 5.0)
        rel = world - point.astype(np.float32)
        along = rel @ axis.astype(np.float32)
        perp = np.sqrt(np.maximum((rel**2).sum(-1) - along**2, 0.0))
        wobble = _waves(rng, world, 2, 40.0, 0.8)
        distractor = np.maximum(distractor, _soft(radius + wobble - perp, 0.6))
    n_blobs = int(rng.integers(3, 5))
    for _ in range(n_blobs):
        for _attempt in range(20):
            centre = np.array([rng.uniform(-0.7, 0.7) * half[0], rng.uniform(-0.65, 0.65) * half[1], rng.uniform(-0.7, 0.7) * half[2]])
            if np.linalg.norm((centre - organ_centre) / organ_axes) > 1.8:
                break
        radius = rng.uniform(5.5, 8.0)
        r = np.sqrt(((world - centre.astype(np.float32)) ** 2).sum(-1))
        distractor = np.maximum(distractor, _soft(radius - r, 0.6))
    distractor *= body
    # The labelled structures sit on top of anything that overlaps them.
    foreground_soft = np.maximum(organ_soft, second_soft)
    distractor = distractor * (1.0 - foreground_soft)

    # Intensities (before bias and noise). Mean levels: air 0, tissue ~0.35, organ ≈ distractor ≈ 1.0.
    tissue = 0.35 + 0.06 * _smooth_noise(rng, shape, 8.0, spacing)
    organ_texture = 1.0 + 0.2 * _smooth_noise(rng, shape, 1.2, spacing)  # fine mottling
    second_texture = 0.95 + 0.16 * _smooth_noise(rng, shape, 3.5, spacing)  # coarse blotches
    distractor_texture = 1.02 + 0.03 * _smooth_noise(rng, shape, 6.0, spacing)  # smooth
    image = body * tissue
    image = image * (1 - distractor) + distractor * distractor_texture
    image = image * (1 - organ_soft) + organ_soft * organ_texture
    if classes == 2:
        image = image * (1 - second_soft) + second_soft * second_texture

    # Smooth multiplicative bias field (±~25 %) and noise.
    bias = np.exp(0.12 * _waves(rng, world, 3, 120.0, 1.0) + 0.08 * _smooth_noise(rng, shape, 25.0, spacing))
    image = image * bias + 0.06 * rng.standard_normal(shape).astype(np.float32)
    image = (image * 400.0).astype(np.float32)  # MR-like arbitrary units

    meta = {
        "direction_kind": kind,
        "organ_centre_mm": organ_centre.round(2).tolist(),
        "tubes": n_tubes,
        "blobs": n_blobs,
    }
    return DemoCase(case_id, image, label, spacing, tuple(float(v) for v in origin), direction, meta)


# ----------------------------------------------------------------------------------------------
# writing


def _to_sitk(array_xyz: np.ndarray, spacing, origin, direction):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array_xyz, (2, 1, 0))))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(v) for v in np.asarray(direction, dtype=float).reshape(-1)))
    return image


def write_case_files(case: DemoCase, image_path: Path, label_path: Path | None) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(_to_sitk(case.image, case.spacing, case.origin, case.direction), str(image_path), True)
    if label_path is not None:
        sitk.WriteImage(_to_sitk(case.label, case.spacing, case.origin, case.direction), str(label_path), True)


def split_counts(cases: int, labeled: int, validation: int | None = None, test: int | None = None) -> dict:
    """Number of cases per role. Defaults: validation 2 (1 below 8 cases), test = max(1, cases // 4)."""
    if validation is None:
        validation = 2 if cases >= 8 else 1
    if test is None:
        test = max(1, cases // 4)
    unlabeled = cases - labeled - validation - test
    if labeled < 1:
        raise ValueError("--labeled must be at least 1")
    if min(validation, test) < 0 or unlabeled < 1:
        raise ValueError(
            f"{cases} cases cannot hold {labeled} labelled + {validation} validation + {test} test cases and "
            f"at least one unlabelled case; raise --cases to at least {labeled + validation + test + 1}"
        )
    return {"labeled": labeled, "unlabeled": unlabeled, "validation": validation, "test": test}


def generate_demo_dataset(
    out_dir: str | os.PathLike,
    cases: int = 16,
    labeled: int = 4,
    seed: int = 0,
    classes: int = 1,
    validation: int | None = None,
    test: int | None = None,
    shape=DEFAULT_SHAPE,
    spacing=DEFAULT_SPACING,
    overwrite: bool = False,
    events=None,
    keep_unlabeled_labels: bool = False,
) -> Path:
    """Write the demo dataset to ``out_dir`` and return the path of its ``dataset.json`` manifest.

    ``keep_unlabeled_labels``: also write the labels of the unlabelled cases (into ``labelsUnlabeled/``, named in
    the manifest; training ignores them), so that a benchmark can train a fully supervised upper bound.

    Everything is written into a temporary sibling folder and renamed into place at the end, so an
    interrupted run leaves no half-written dataset. ``out_dir`` must not exist or be empty unless
    ``overwrite``.
    """
    labels = {"0": "background", "1": "organ"}
    if classes == 2:
        labels["2"] = "second"

    def write_case(index: int, case_id: str, case_seed: int, image_path: Path, label_path: Path | None) -> dict:
        case = generate_case(case_id, case_seed, index=index, shape=shape, spacing=spacing, classes=classes)
        write_case_files(case, image_path, label_path)
        return {"direction": case.meta["direction_kind"]}

    return write_dataset(
        out_dir, name=f"lightunetr-demo-{classes}class",
        description="Synthetic organ-vs-distractor task generated by `lightunetr demo-data` (seed %d)." % seed,
        modalities=["MR"], labels=labels, counts=split_counts(cases, labeled, validation, test), seed=seed,
        write_case=write_case, case_prefix="demo", extensions=(".nii.gz", ".nii.gz", ".nrrd"), overwrite=overwrite,
        events=events, keep_unlabeled_labels=keep_unlabeled_labels)


def write_dataset(out_dir: str | os.PathLike, *, name: str, description: str, modalities: list[str],
                  labels: dict[str, str], counts: dict[str, int], seed: int, write_case, case_prefix: str,
                  extensions=(".nii.gz",), overwrite: bool = False, events=None,
                  keep_unlabeled_labels: bool = False) -> Path:
    """Write a generated dataset (the demo's, the anatomy one's) with its ``dataset.json`` and return the
    manifest's path.

    ``counts``: cases per role (:func:`split_counts`); case ``i`` gets the seed ``i``-th of a generator seeded
    with ``seed`` and the file ending ``extensions[i % len(extensions)]``; ``write_case(index, case_id,
    case_seed, image_path, label_path)`` writes one case's files (``label_path`` is None for an unlabelled
    case unless ``keep_unlabeled_labels``) and returns extra manifest fields. Everything is written into a
    temporary sibling folder renamed into place at the end, so an interrupted run leaves no half-written
    dataset; ``out_dir`` must not exist or be empty unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty; choose a new folder or pass --overwrite")
    with atomic_folder(out_dir) as tmp:
        for images_dir, labels_dir in map(role_folders, ROLES):
            (tmp / images_dir).mkdir()
            if labels_dir:
                (tmp / labels_dir).mkdir()
        if keep_unlabeled_labels:
            (tmp / HELD_ASIDE_LABELS).mkdir()
        manifest = {"name": name, "description": description, "modalities": list(modalities), "labels": labels,
                    "cases": []}
        roles = [r for r in ROLES for _ in range(counts[r])]
        case_seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(roles))
        for i, role in enumerate(roles):
            case_id = f"{case_prefix}_{i:03d}"
            ext = extensions[i % len(extensions)]
            images_dir, labels_dir = role_folders(role)
            if role == "unlabeled" and keep_unlabeled_labels:
                labels_dir = HELD_ASIDE_LABELS
            image_rel = f"{images_dir}/{case_id}_0000{ext}"
            label_rel = f"{labels_dir}/{case_id}{ext}" if labels_dir else None
            extra = write_case(i, case_id, int(case_seeds[i]), tmp / image_rel, tmp / label_rel if label_rel else None)
            manifest["cases"].append({"id": case_id, "images": [image_rel], "label": label_rel, "role": role,
                                      **(extra or {})})
            if events is not None:
                events.progress(i + 1, len(roles), stage="demo-data")
        with open(tmp / "dataset.json", "w") as f:
            json.dump(manifest, f, indent=2)
    return out_dir / "dataset.json"


def best_threshold_dice(image: np.ndarray, label: np.ndarray, n_thresholds: int = 64) -> tuple[float, float]:
    """Best Dice of ``image > t`` (or ``image < t``) against ``label > 0`` over global thresholds ``t``.

    Returns (dice, threshold). Used to check that the demo task is not solvable by thresholding.
    """
    fg = label > 0
    n_fg = int(fg.sum())
    values = image.ravel()
    thresholds = np.quantile(values, np.linspace(0.01, 0.99, n_thresholds))
    best = (0.0, float(thresholds[0]))
    for t in thresholds:
        for pred in (image > t, image < t):
            inter = int(np.logical_and(pred, fg).sum())
            dice = 2 * inter / (int(pred.sum()) + n_fg) if (pred.sum() + n_fg) else 0.0
            if dice > best[0]:
                best = (dice, float(t))
    return best


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a whole volume (numpy implementation)."""
    hist, edges = np.histogram(image.ravel(), bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])
