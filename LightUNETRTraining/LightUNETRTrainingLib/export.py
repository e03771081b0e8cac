"""Export of the training cases to a job folder (Qt-free), in the dataset manifest format of
``lightunetr_core.data.dataset``.

Volumes are written as .nrrd through ``vtkMRMLVolumeArchetypeStorageNode`` (their own IJK-to-RAS
geometry, no resampling). Segmentations are exported on the grid of their volume with the Segmentations
module logic (``ExportSegmentsToLabelmapNode``), segment IDs ordered by the table's class list, so label
value ``k`` is class ``k`` in every case. Everything is written to a temporary folder that is renamed
to ``<job>/data`` only when complete, so a failure never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field

import slicer

from LightUNETRSegmentationLib import segments, volumeio

from .cases import CaseTable, segment_id_by_name

FOLDERS = {  # role → (image folder, label folder)
    "labeled": ("imagesTr", "labelsTr"),
    "unlabeled": ("imagesUnlabeled", None),
    "validation": ("imagesVal", "labelsVal"),
}
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


def export_cases(table: CaseTable, jobFolder: str, config=None, name: str | None = None) -> ExportResult:
    """Write every non-ignored case of ``table`` to ``<jobFolder>/data`` and its manifest
    ``dataset.json``. The table must have passed :meth:`CaseTable.check`."""
    from .config import as_config

    config = as_config(config)
    if not table.check(config):
        raise ExportError("The case table has problems:\n" + table.report())
    classes = table.classes
    jobFolder = os.path.abspath(os.fspath(jobFolder))
    os.makedirs(jobFolder, exist_ok=True)
    final = os.path.join(jobFolder, "data")
    if os.path.exists(final):
        raise ExportError(f"{final} already exists; choose a new job folder.")
    tmp = os.path.join(jobFolder, f".data-tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        files, cases = {}, []
        for row in table.rows:
            if row.role == "ignore":
                continue
            image_dir, label_dir = FOLDERS[row.role]
            image_rel = f"{image_dir}/{row.case_id}_0000.nrrd"
            volumeio.export_volume(row.volume, os.path.join(tmp, image_rel))
            label_rel = None
            if label_dir:
                label_rel = f"{label_dir}/{row.case_id}.nrrd"
                export_labelmap(row.segmentation, classes, row.volume, os.path.join(tmp, label_rel))
            cases.append({"id": row.case_id, "images": [image_rel], "label": label_rel, "role": row.role,
                          "volume": row.name,
                          "segmentation": row.segmentation.GetName() if label_rel else None})
            files[row.case_id] = {"image": os.path.join(final, image_rel),
                                  "label": os.path.join(final, label_rel) if label_rel else None, "role": row.role}
        labels = {"0": "background", **{str(k + 1): c for k, c in enumerate(classes)}}
        manifest = {"name": name or config.name, "modalities": [config.modality], "labels": labels, "cases": cases}
        if config.target_spacing:
            manifest["preprocessing"] = {"target_spacing": [float(s) for s in config.target_spacing]}
        with open(os.path.join(tmp, MANIFEST_NAME), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, final)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (ExportError, volumeio.VolumeIOError)):
            raise ExportError(str(exc)) from exc
        raise
    return ExportResult(os.path.join(final, MANIFEST_NAME), final, files, labels)
