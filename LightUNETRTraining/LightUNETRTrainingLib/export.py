"""Export of the training cases to a job folder (Qt-free), in the dataset manifest format of
``lightunetr_core.data.manifest``.

Volumes are written as .nrrd through ``vtkMRMLVolumeArchetypeStorageNode`` (their own IJK-to-RAS
geometry, no resampling). Segmentations are exported on the grid of their volume with the Segmentations
module logic (``ExportSegmentsToLabelmapNode``), segment IDs ordered by the table's class list, so label
value ``k`` is class ``k`` in every case. Everything is written to a temporary folder that is renamed
to ``<job>/data`` only when complete, so a failure never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import slicer
from lightunetr_core.atomic import AtomicFolder
from lightunetr_core.vocabulary import role_folders

from LightUNETRSlicerLib import segments, volumeio

from .cases import CaseTable, segment_id_by_name

MANIFEST_NAME = "dataset.json"


class ExportError(RuntimeError):
    """The cases could not be exported; the message names the case and the cause."""


@dataclass
class ExportResult:
    manifest: str
    folder: str
    files: dict = field(default_factory=dict)  # case id → {"image": path, "label": path|None, "role": role}
    labels: dict = field(default_factory=dict)  # "0": "background", "1": class...


def export_labelmap(segmentationNode, classes, referenceVolumeNode, path: str) -> str:
    """Write the segments named ``classes`` as one label map on the grid of ``referenceVolumeNode``
    (class ``classes[k]`` → value ``k+1``). Raises :class:`ExportError` if a class is missing."""
    import vtk

    ids = vtk.vtkStringArray()
    for name in classes:
        sid = segment_id_by_name(segmentationNode, name)
        if sid is None:
            raise ExportError(f"segmentation '{segmentationNode.GetName()}' has no segment '{name}'.")
        ids.InsertNextValue(sid)
    scene = referenceVolumeNode.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__LightUNETR_export__")
    try:
        logic = slicer.modules.segmentations.logic()
        ok = logic.ExportSegmentsToLabelmapNode(segmentationNode, ids, labelmap, referenceVolumeNode)
        if not ok or labelmap.GetImageData() is None:
            raise ExportError(f"could not export segmentation '{segmentationNode.GetName()}' to a label map.")
        return volumeio.export_volume(labelmap, path)
    finally:
        segments.remove_node(labelmap)


class CaseExport:
    """The export of a checked case table, one case per :meth:`step` (a volume written through a storage
    node takes up to a second or so; exporting one case per timer tick keeps Slicer responsive instead of
    freezing it for the whole table). Everything goes to a hidden temporary folder renamed to
    ``<jobFolder>/data`` only after the last case, so an aborted or failed export leaves nothing behind.

    ``start()`` checks and prepares; ``step()`` → True when finished (``result`` is then set);
    ``abort()`` removes what was written.
    """

    def __init__(self, table: CaseTable, jobFolder: str, config=None, name: str | None = None):
        from .config import as_config

        self.table = table
        self.config = as_config(config)
        self.name = name or self.config.name
        self.jobFolder = os.path.abspath(os.fspath(jobFolder))
        self.final = os.path.join(self.jobFolder, "data")
        self.staging: AtomicFolder | None = None  # <job>/data while it is written
        self.rows = [r for r in table.rows if r.role != "ignore"]
        self.done_count = 0
        self.files: dict = {}
        self.cases: list = []
        self.classes: list = []
        self.result: ExportResult | None = None

    @property
    def total(self) -> int:
        return len(self.rows)

    def start(self) -> "CaseExport":
        if not self.table.check(self.config):
            raise ExportError("The case table has problems:\n" + self.table.report())
        self.classes = self.table.classes
        os.makedirs(self.jobFolder, exist_ok=True)
        if os.path.exists(self.final):
            raise ExportError(f"{self.final} already exists; choose a new job folder.")
        self.staging = AtomicFolder(self.final)
        return self

    @property
    def tmp(self) -> str | None:
        """The hidden folder the cases are written to until the export is complete."""
        return str(self.staging.tmp) if self.staging is not None else None

    def step(self) -> bool:
        """Export the next case (or finish); True when the export is complete. Raises :class:`ExportError`
        after removing the partial export."""
        if self.result is not None:
            return True
        try:
            if self.done_count < len(self.rows):
                self._export_row(self.rows[self.done_count])
                self.done_count += 1
                return False
            self._finish()
            return True
        except Exception as exc:
            self.abort()
            if isinstance(exc, (ExportError, volumeio.VolumeIOError)):
                raise ExportError(str(exc)) from exc
            raise

    def _export_row(self, row) -> None:
        if row.volume.GetScene() is None or (row.segmentation is not None and row.has_label
                                             and row.segmentation.GetScene() is None):
            raise ExportError(f"case '{row.name}' was removed from the scene during the export.")
        image_dir, label_dir = role_folders(row.role)
        image_rel = f"{image_dir}/{row.case_id}_0000.nrrd"
        volumeio.export_volume(row.volume, os.path.join(self.tmp, image_rel))
        label_rel = None
        if label_dir:
            label_rel = f"{label_dir}/{row.case_id}.nrrd"
            export_labelmap(row.segmentation, self.classes, row.volume, os.path.join(self.tmp, label_rel))
        self.cases.append({"id": row.case_id, "images": [image_rel], "label": label_rel, "role": row.role,
                           "volume": row.name, "segmentation": row.segmentation.GetName() if label_rel else None})
        self.files[row.case_id] = {"image": os.path.join(self.final, image_rel),
                                   "label": os.path.join(self.final, label_rel) if label_rel else None, "role": row.role}

    def _finish(self) -> None:
        labels = {"0": "background", **{str(k + 1): c for k, c in enumerate(self.classes)}}
        manifest = {"name": self.name, "modalities": [self.config.modality], "labels": labels, "cases": self.cases}
        if self.config.target_spacing and not self.config.init_bundle:  # fine-tuning: the model's own plan
            manifest["preprocessing"] = {"target_spacing": [float(s) for s in self.config.target_spacing]}
        with open(os.path.join(self.tmp, MANIFEST_NAME), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        self.staging.commit()
        self.staging = None
        self.result = ExportResult(os.path.join(self.final, MANIFEST_NAME), self.final, self.files, labels)

    def abort(self) -> None:
        if self.staging is not None:
            self.staging.abort()
            self.staging = None


def export_cases(table: CaseTable, jobFolder: str, config=None, name: str | None = None) -> ExportResult:
    """Write every non-ignored case of ``table`` to ``<jobFolder>/data`` and its manifest
    ``dataset.json`` at once (console API; the GUI exports case by case with :class:`CaseExport`)."""
    export = CaseExport(table, jobFolder, config, name).start()
    while not export.step():
        pass
    return export.result
