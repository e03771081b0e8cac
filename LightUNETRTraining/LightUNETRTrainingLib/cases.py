"""The training case table (Qt-free): which volumes of the scene are training cases, their role, their
segmentation, the classes, and every problem that would stop a training run, per row.

Rows come from every scalar volume of the scene or of one subject-hierarchy folder (recursively). A
volume that has a matching segmentation is offered as ``labeled``; the others as ``unlabeled``.
A segmentation matches a volume when its reference geometry node is the volume, or, failing that, when
it is the only segmentation next to exactly one volume in the same subject-hierarchy folder.

Classes are segment names: the same name in different cases is the same class (names are compared
after stripping spaces, case-sensitively, so "Liver" and "liver" are reported as different classes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import slicer
from lightunetr_core import vocabulary

from LightUNETRSlicerLib import generated

#: A row's role: the dataset roles a training uses, or left out of it.
ROLES = tuple(r for r in vocabulary.ROLES if r != "test") + ("ignore",)
ROLES_WITH_LABEL = vocabulary.ROLES_NEEDING_LABEL
CSE_RECIPES = tuple(name for name, engine in vocabulary.RECIPES.items() if engine != "supervised")


def _matrix(vtk_matrix):
    import numpy as np

    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_ijk_to_ras(volumeNode):
    import vtk

    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return _matrix(m)


def safe_case_id(name: str, taken: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "case"
    cid, n = base, 2
    while cid in taken:
        cid, n = f"{base}_{n}", n + 1
    taken.add(cid)
    return cid


def segment_names(segmentationNode) -> list[str]:
    if segmentationNode is None:
        return []
    seg = segmentationNode.GetSegmentation()
    return [seg.GetNthSegment(i).GetName().strip() for i in range(seg.GetNumberOfSegments())]


def segment_id_by_name(segmentationNode, name: str) -> str | None:
    seg = segmentationNode.GetSegmentation()
    for i in range(seg.GetNumberOfSegments()):
        if seg.GetNthSegment(i).GetName().strip() == name:
            return seg.GetNthSegmentID(i)
    return None


def _source_representation(segmentation) -> str:
    if hasattr(segmentation, "GetSourceRepresentationName"):
        return segmentation.GetSourceRepresentationName()
    return segmentation.GetMasterRepresentationName()  # Slicer < 5.4


def volume_problems(volumeNode) -> list[str]:
    """Why a volume cannot be a training image (empty list: usable)."""
    name = volumeNode.GetName()
    image = volumeNode.GetImageData()
    if image is None:
        return [f"'{name}' has no image data; load it again."]
    out = []
    if image.GetNumberOfScalarComponents() != 1:
        out.append(f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel; convert it to a scalar "
                   "volume (Vector to Scalar Volume).")
    dims = image.GetDimensions()
    if min(dims) < 2:
        out.append(f"'{name}' is 2-D ({dims[0]}x{dims[1]}x{dims[2]} voxels); training needs 3-D volumes.")
    transform = volumeNode.GetParentTransformNode()
    if transform is not None and not transform.IsLinear():
        out.append(f"'{name}' is under a non-linear transform; harden it first.")
    return out


def segmentation_grid_problem(segmentationNode, volumeNode, tol: float = 1e-3) -> str | None:
    """A message when the segmentation's binary labelmaps are not on the voxel grid of ``volumeNode`` (same
    axes and spacing, origin shifted by whole voxels) or not under the same transform; None when they
    are, so exporting it on the volume's grid is voxel-exact (no resampling)."""
    import numpy as np
    import vtk

    seg_name, vol_name = segmentationNode.GetName(), volumeNode.GetName()
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        return f"segmentation '{seg_name}' has no segments."
    labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if _source_representation(segmentation) != labelmap_name:
        return (f"segmentation '{seg_name}' is stored as '{_source_representation(segmentation)}', not as a binary "
                "labelmap; convert it (Segmentations module → Representations → Binary labelmap → make source).")
    if segmentationNode.GetTransformNodeID() != volumeNode.GetTransformNodeID():
        return (f"segmentation '{seg_name}' and volume '{vol_name}' are under different transforms; put them under "
                "the same transform or harden both.")
    ras_to_ijk = np.linalg.inv(volume_ijk_to_ras(volumeNode))
    dims = np.array(volumeNode.GetImageData().GetDimensions())
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        image = segment.GetRepresentation(labelmap_name)
        if image is None:
            continue
        ext = image.GetExtent()
        if ext[1] < ext[0] or ext[3] < ext[2] or ext[5] < ext[4]:
            continue  # empty segment: nothing to place
        m = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(m)
        rel = ras_to_ijk @ _matrix(m)  # segment IJK → volume IJK
        shift = rel[:3, 3]
        if not (np.allclose(rel[:3, :3], np.eye(3), atol=tol) and np.allclose(shift, np.rint(shift), atol=tol)):
            return (f"segment '{segment.GetName()}' of '{seg_name}' is on another voxel grid than volume '{vol_name}' "
                    "(different spacing, orientation or a sub-voxel shift); it would be resampled. Set the "
                    "segmentation's geometry to the volume (Segment Editor → Specify geometry) or resample it.")
        lo = np.array(ext[0::2]) + np.rint(shift)
        hi = np.array(ext[1::2]) + np.rint(shift)
        if (lo < 0).any() or (hi > dims - 1).any():
            # Only a problem if there are labelled voxels outside the volume.
            arr = _segment_voxels_outside(image, lo, hi, dims)
            if arr:
                return (f"segment '{segment.GetName()}' of '{seg_name}' has {arr} voxel(s) outside volume '{vol_name}'; "
                        "they would be lost. Crop the segment or use a larger volume.")
    return None


def _segment_voxels_outside(image, lo, hi, dims) -> int:
    import numpy as np
    from vtk.util.numpy_support import vtk_to_numpy

    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        return 0
    n = (hi - lo + 1).astype(int)
    arr = vtk_to_numpy(scalars).reshape(n[2], n[1], n[0])
    k, j, i = np.nonzero(arr)
    pts = np.stack([i + lo[0], j + lo[1], k + lo[2]], axis=1)
    outside = ((pts < 0) | (pts > dims - 1)).any(axis=1)
    return int(outside.sum())


@dataclass
class CaseRow:
    """One training case: a volume, its role, its segmentation (labelled cases) and its problems."""

    volume: object
    segmentation: object = None
    role: str = "unlabeled"
    case_id: str = ""
    problems: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.volume.GetName()

    @property
    def classes(self) -> list[str]:
        return segment_names(self.segmentation)

    @property
    def has_label(self) -> bool:
        return self.role in ROLES_WITH_LABEL

    @property
    def review(self) -> str:
        """The segmentation's :func:`generated.review_state` (``not generated`` for the user's own)."""
        return generated.review_state(self.segmentation) if self.segmentation is not None else generated.NOT_GENERATED

    def __repr__(self):
        seg = self.segmentation.GetName() if self.segmentation is not None else None
        return f"<CaseRow {self.case_id} {self.role} volume={self.name!r} segmentation={seg!r} problems={len(self.problems)}>"


class CaseTable:
    """Rows of the training case table plus the class list and the checks before a run."""

    def __init__(self, rows: list | None = None, classes: list | None = None):
        self.rows: list[CaseRow] = list(rows or [])
        self._classes = list(classes) if classes else None  # None: derived from the segment names
        self.problems: list[str] = []  # problems that concern the whole table
        self._assign_ids()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_scene(cls, scene=None, folderItemId: int | None = None) -> "CaseTable":
        """Every scalar volume of the scene (or under the subject-hierarchy item ``folderItemId``), each
        with its matching segmentation; role ``labeled`` when it has one, else ``unlabeled``."""
        scene = scene or slicer.mrmlScene
        volumes = [n for n in _nodes(scene, "vtkMRMLScalarVolumeNode") if generated.is_input_volume(n)]
        segmentations = [n for n in _nodes(scene, "vtkMRMLSegmentationNode")
                         if not n.GetHideFromEditors() and generated.generated_kind(n) != "preview"]
        if folderItemId:
            inside = _items_under(scene, folderItemId)
            volumes = [v for v in volumes if _sh_item(v) in inside]
            segmentations = [s for s in segmentations if _sh_item(s) in inside]
        matches = match_segmentations(volumes, segmentations)
        rows = []
        for v in volumes:
            seg = matches.get(v.GetID())
            # AI output stays an unlabelled case until each of its AI segments was reviewed.
            rows.append(CaseRow(v, seg, "labeled" if seg is not None and generated.usable_as_label(seg) else "unlabeled"))
        return cls(rows)

    @classmethod
    def from_nodes(cls, labeledPairs=(), unlabeledVolumes=(), validationPairs=(), classes=None) -> "CaseTable":
        """Console API: ``labeledPairs`` / ``validationPairs`` are (volume, segmentation) pairs."""
        rows = [CaseRow(v, s, "labeled") for v, s in labeledPairs]
        rows += [CaseRow(v, s, "validation") for v, s in validationPairs]
        rows += [CaseRow(v, None, "unlabeled") for v in unlabeledVolumes]
        return cls(rows, classes)

    def _assign_ids(self) -> None:
        taken: set = set()
        for row in self.rows:
            row.case_id = safe_case_id(row.case_id or row.name, taken)

    # ------------------------------------------------------------------ access
    def row(self, key) -> CaseRow:
        """Row by index, case id, volume node or volume name."""
        if isinstance(key, int):
            return self.rows[key]
        for r in self.rows:
            if key is r.volume or key in (r.case_id, r.name):
                return r
        raise KeyError(f"no case {key!r} in the table")

    def set_role(self, key, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.row(key).role = role

    def set_segmentation(self, key, segmentationNode) -> None:
        self.row(key).segmentation = segmentationNode

    def by_role(self, role: str) -> list[CaseRow]:
        return [r for r in self.rows if r.role == role]

    @property
    def classes(self) -> list[str]:
        """Class names (label values 1..N in this order): the explicit list if one was given, else the
        segment names most labelled/validation cases share (ties: the earliest such case), in the segment
        order of the first case that has exactly them. Cases with other names are flagged by :meth:`check`."""
        if self._classes:
            return list(self._classes)
        sets: list = []
        for r in self.rows:
            if r.has_label and r.segmentation is not None and r.classes:
                sets.append((frozenset(r.classes), r.classes))
        if not sets:
            return []
        counts: dict = {}
        for key, _ in sets:
            counts[key] = counts.get(key, 0) + 1
        best = max(counts.values())
        for key, names in sets:  # first case with the most common set
            if counts[key] == best:
                out: list[str] = []
                for n in names:
                    if n not in out:
                        out.append(n)
                return out
        return []

    @classes.setter
    def classes(self, names) -> None:
        self._classes = [str(n).strip() for n in names] if names else None

    # ------------------------------------------------------------------ checks
    def check(self, config=None) -> bool:
        """Fill ``self.problems`` (whole table) and ``row.problems`` (per row); True when training can start."""
        from .config import TrainingConfig

        config = config or TrainingConfig()
        self.problems = []
        classes = self.classes
        seen_volumes: dict = {}
        for row in self.rows:
            row.problems = []
            if row.role not in ROLES:
                row.problems.append(f"unknown role {row.role!r}; use one of {', '.join(ROLES)}.")
                continue
            if row.role == "ignore":
                continue
            if row.volume is None or row.volume.GetScene() is None:
                row.problems.append("the volume is no longer in the scene.")
                continue
            if row.volume.GetID() in seen_volumes:
                row.problems.append(f"the same volume is already case '{seen_volumes[row.volume.GetID()]}'.")
            seen_volumes[row.volume.GetID()] = row.case_id
            row.problems += volume_problems(row.volume)
            if not row.has_label:
                continue
            if row.segmentation is None:
                row.problems.append(f"role '{row.role}' needs a segmentation; add one or set the role to 'unlabeled'.")
                continue
            if row.volume.GetImageData() is None:
                continue
            if not generated.usable_as_label(row.segmentation):
                row.problems.append(
                    f"'{row.segmentation.GetName()}' holds AI segments not yet reviewed "
                    f"({', '.join(generated.unreviewed_segment_names(row.segmentation))}); check them, then edit them "
                    "or set their status to Completed in the Segment Editor, or click 'Mark reviewed'.")
            grid = segmentation_grid_problem(row.segmentation, row.volume)
            if grid:
                row.problems.append(grid)
            names = row.classes
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                row.problems.append(f"segment name(s) {dup} appear more than once in '{row.segmentation.GetName()}'; "
                                    "give every segment its own name.")
            missing = [c for c in classes if c not in names]
            if missing:
                row.problems.append(
                    f"'{row.segmentation.GetName()}' has no segment named {', '.join(repr(m) for m in missing)} "
                    f"(classes of the other cases: {', '.join(classes)}); rename its segments to match, or add an "
                    "empty segment with that name if the structure is absent in this case.")
            extra = [n for n in names if n not in classes]
            if extra:
                row.problems.append(f"segment(s) {', '.join(repr(e) for e in extra)} are not in the class list "
                                    f"{classes}; rename or remove them.")
        labeled = [r for r in self.by_role("labeled")]
        unlabeled = self.by_role("unlabeled")
        if not labeled:
            self.problems.append("No labelled case: set the role of at least one volume with a segmentation to "
                                 "'labeled'.")
        if not classes and labeled:
            self.problems.append("The labelled cases have no segments; the classes are the segment names.")
        if labeled and len(labeled) < config.batch_labeled:
            self.problems.append(f"{len(labeled)} labelled case(s) but the labelled batch size is "
                                 f"{config.batch_labeled}; add labelled cases or lower the batch size.")
        if config.recipe in CSE_RECIPES:
            if not unlabeled:
                self.problems.append("No unlabelled case: CSE (semi-supervised) training needs unlabelled volumes; "
                                     "add some or choose the 'supervised' recipe.")
            elif len(unlabeled) < config.batch_unlabeled:
                self.problems.append(f"{len(unlabeled)} unlabelled case(s) but the unlabelled batch size is "
                                     f"{config.batch_unlabeled}; add unlabelled cases or lower the batch size.")
        self.problems += config.problems()
        from .startfrom import problems as start_from_problems

        self.problems += start_from_problems(config, classes)
        return self.ok

    @property
    def ok(self) -> bool:
        return not self.problems and not any(r.problems for r in self.rows)

    def report(self) -> str:
        """All problems as text (one line each, rows named)."""
        lines = list(self.problems)
        for r in self.rows:
            lines += [f"{r.name} ({r.role}): {p}" for p in r.problems]
        return "\n".join(lines)

    def __repr__(self):
        return f"<CaseTable {len(self.rows)} rows, classes={self.classes}>"


# ---------------------------------------------------------------------- scene helpers
def _nodes(scene, cls):
    col = scene.GetNodesByClass(cls)
    out = [col.GetItemAsObject(i) for i in range(col.GetNumberOfItems())]
    return out


def _sh(scene):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _sh_item(node) -> int:
    sh = _sh(node.GetScene())
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(sh.GetSceneItemID(), node)
    return item


def _items_under(scene, folderItemId) -> set:
    import vtk

    sh = _sh(scene)
    ids = vtk.vtkIdList()
    sh.GetItemChildren(folderItemId, ids, True)
    return {ids.GetId(i) for i in range(ids.GetNumberOfIds())}


def match_segmentations(volumes, segmentations) -> dict:
    """{volume ID: segmentation node}: reference geometry first, then the only segmentation next to the
    only volume in one subject-hierarchy folder (never the scene root)."""
    out: dict = {}
    volume_ids = {v.GetID() for v in volumes}
    used = set()
    for s in segmentations:
        ref = s.GetNodeReference(s.GetReferenceImageGeometryReferenceRole())
        if ref is not None and ref.GetID() in volume_ids and ref.GetID() not in out:
            out[ref.GetID()] = s
            used.add(s.GetID())
    if not volumes:
        return out
    sh = _sh(volumes[0].GetScene())
    root = sh.GetSceneItemID()
    by_parent_vol: dict = {}
    by_parent_seg: dict = {}
    for v in volumes:
        by_parent_vol.setdefault(sh.GetItemParent(_sh_item(v)), []).append(v)
    for s in segmentations:
        by_parent_seg.setdefault(sh.GetItemParent(_sh_item(s)), []).append(s)
    for parent, segs in by_parent_seg.items():
        if parent == root:
            continue
        vols = by_parent_vol.get(parent, [])
        free_vols = [v for v in vols if v.GetID() not in out]
        free_segs = [s for s in segs if s.GetID() not in used]
        if len(vols) == 1 and len(free_vols) == 1 and len(free_segs) == 1:
            out[free_vols[0].GetID()] = free_segs[0]
            used.add(free_segs[0].GetID())
    return out
