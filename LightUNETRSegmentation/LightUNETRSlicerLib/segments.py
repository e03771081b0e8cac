"""Label specifications (value, name, colour, terminology) and import of a result labelmap file into a
segmentation node.

Import route (as SlicerNNUnet and SlicerMONAIAuto3DSeg import their results): a user colour table whose colour names are the label names is set
as the segmentation's labelmap-conversion colour table, then the segmentation storage node reads the
labelmap file, so every label value becomes a segment whose ID and name are the label name. The file is
first read into a *temporary* segmentation node; the output node is changed only after that worked, so a
failed import leaves the scene untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import slicer

# One terminology and colour table for the engine and the modules: lightunetr_core/terminology.py
# (standard library only, so importing it brings no torch into Slicer's process).
from lightunetr_core.terminology import color_for, terminology_for


@dataclass
class LabelSpec:
    """One output label of a model: its value in the labelmap, segment name, colour and terminology."""

    value: int
    name: str
    color: tuple[float, float, float] = field(default=None)  # type: ignore[assignment]
    terminology: str | None = None

    def __post_init__(self):
        self.value = int(self.value)
        self.name = str(self.name).strip() or f"Label {self.value}"
        if self.color is None:
            self.color = color_for(self.name, self.value)
        self.color = tuple(float(c) for c in self.color)
        if any(c > 1.0 for c in self.color):  # 0..255 colours from a model card
            self.color = tuple(c / 255.0 for c in self.color)
        if self.terminology is None:
            self.terminology = terminology_for(self.name, self.value)


def label_specs_from_names(names, colors=None, terminologies=None) -> list[LabelSpec]:
    """``names`` is either a list (index = label value, index 0 = background, skipped) or a dict value→name."""
    if isinstance(names, dict):
        items = sorted((int(k), v) for k, v in names.items())
    else:
        items = list(enumerate(names))
    colors = colors or {}
    terminologies = terminologies or {}
    specs = []
    for value, name in items:
        if value == 0:
            continue
        color = colors.get(value, colors.get(str(value))) if isinstance(colors, dict) else None
        term = terminologies.get(value, terminologies.get(str(value))) if isinstance(terminologies, dict) else None
        specs.append(LabelSpec(value, name, color, term))
    return specs


def validate_label_specs(labels) -> str | None:
    """Message describing what is wrong with a label list, or None."""
    if not labels:
        return "The model defines no foreground labels."
    values = [s.value for s in labels]
    names = [s.name for s in labels]
    if len(set(values)) != len(values):
        return f"Label values are not unique: {values}."
    if len(set(n.lower() for n in names)) != len(names):
        return f"Label names are not unique: {names}; give every label its own name in the model card."
    if min(values) < 1:
        return "Label value 0 is the background and cannot be a segment."
    return None


UNKNOWN_PREFIX = "__unknown_label_"


def remove_node(node) -> None:
    """Remove a node and its display and storage nodes from its scene."""
    if node is None or node.GetScene() is None:
        return
    scene = node.GetScene()
    extra = []
    if hasattr(node, "GetNumberOfDisplayNodes"):
        extra += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if hasattr(node, "GetNumberOfStorageNodes"):
        extra += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for n in extra:
        if n is not None and n.GetScene() is not None:
            scene.RemoveNode(n)


def make_color_table(labels, name: str = "LightUNETR labels", scene=None):
    """User colour table (added to the scene) whose entry ``value`` is named after the label."""
    scene = scene or slicer.mrmlScene
    ct = scene.CreateNodeByClass("vtkMRMLColorTableNode")
    ct.SetTypeToUser()
    ct.SetName(name)
    ct.SetHideFromEditors(True)
    max_value = max(s.value for s in labels)
    ct.SetNumberOfColors(max_value + 1)
    ct.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for v in range(1, max_value + 1):
        ct.SetColor(v, f"{UNKNOWN_PREFIX}{v}", 0.5, 0.5, 0.5, 1.0)  # labels the card does not define
    for s in labels:
        r, g, b = s.color
        ct.SetColor(s.value, s.name, r, g, b, 1.0)
        if s.terminology and hasattr(ct, "SetTerminologyFromString"):
            ct.SetTerminologyFromString(s.value, s.terminology)
    scene.AddNode(ct)
    ct.UnRegister(None)
    return ct


def ensure_sh_item(node):
    """Subject-hierarchy item of a node, created when missing (no Qt plugin creates it in slicer-core)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(sh.GetSceneItemID(), node)
    return sh, item


def place_next_to(node, referenceNode) -> None:
    """Put ``node`` in the same subject-hierarchy folder/study as ``referenceNode`` and under the same
    parent transform."""
    if referenceNode is None:
        return
    sh, item = ensure_sh_item(node)
    _, ref_item = ensure_sh_item(referenceNode)
    parent = sh.GetItemParent(ref_item)
    if parent and sh.GetItemParent(item) != parent:
        sh.SetItemParent(item, parent)
    transform_id = referenceNode.GetTransformNodeID()
    if hasattr(node, "SetAndObserveTransformNodeID"):
        node.SetAndObserveTransformNodeID(transform_id)


def set_terminology(segment, terminology: str) -> None:
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(terminology)
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName(), terminology)


def get_terminology(segment) -> str:
    if hasattr(segment, "GetTerminology"):
        return segment.GetTerminology() or ""
    import vtk

    value = vtk.reference("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value)


class SegmentImportError(RuntimeError):
    pass


def import_labelmap_file(
    path: str,
    segmentationNode,
    labels,
    referenceVolumeNode=None,
    replaceExisting: bool = True,
    createMissing: bool = True,
    labelValues=None,
) -> list[str]:
    """Import a multi-label file (.nrrd / .nii.gz / .seg.nrrd) into ``segmentationNode``.

    Each label of ``labels`` (list of :class:`LabelSpec`) becomes a segment named ``spec.name`` with
    its colour and terminology. Segments of the output node with the same names are replaced
    (``replaceExisting``) and labels absent from the file get empty segments (``createMissing``), so the
    user always sees every class of the model. Other segments are kept. Returns the segment IDs in label
    order. Raises :class:`SegmentImportError` and leaves ``segmentationNode`` unchanged on failure.
    """
    msg = validate_label_specs(labels)
    if msg:
        raise SegmentImportError(msg)
    if segmentationNode is None:
        raise SegmentImportError("No output segmentation node given.")
    scene = segmentationNode.GetScene() or slicer.mrmlScene
    if not os.path.exists(path):
        raise SegmentImportError(f"Result file not found: {path}")

    ct = make_color_table(labels, scene=scene)
    tmp = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__LightUNETR_import__")
    storage = scene.CreateNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        tmp.SetLabelmapConversionColorTableNodeID(ct.GetID())
        storage.SetFileName(path)
        if not storage.ReadData(tmp):
            raise SegmentImportError(f"Could not read the result labelmap {path}.")
        tmp_seg = tmp.GetSegmentation()
        by_name = {}
        for i in range(tmp_seg.GetNumberOfSegments()):
            seg = tmp_seg.GetNthSegment(i)
            by_name[seg.GetName()] = tmp_seg.GetNthSegmentID(i)
        known_names = {s.name for s in labels}
        unknown = sorted(set(by_name) - known_names)
        if unknown:
            values = [n[len(UNKNOWN_PREFIX):] for n in unknown if n.startswith(UNKNOWN_PREFIX)]
            if len(values) < len(unknown):
                values.append(f"> {max(s.value for s in labels)}")
            raise SegmentImportError(
                f"The result contains label value(s) {', '.join(values)} that the model card does not define "
                f"(it defines {sorted(s.value for s in labels)}); the model and its card do not match."
            )

        out_seg = segmentationNode.GetSegmentation()
        was_modifying = segmentationNode.StartModify()
        ids = []
        try:
            if referenceVolumeNode is not None and not out_seg.GetNumberOfSegments():
                segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
            if referenceVolumeNode is not None:
                segmentationNode.SetNodeReferenceID(
                    segmentationNode.GetReferenceImageGeometryReferenceRole(), referenceVolumeNode.GetID()
                )
            for spec in labels:
                existing = out_seg.GetSegmentIdBySegmentName(spec.name)
                if existing and replaceExisting:
                    out_seg.RemoveSegment(existing)
                elif existing:
                    ids.append(existing)
                    continue
                if spec.name in by_name:
                    src_id = by_name[spec.name]
                    seg_id = out_seg.GenerateUniqueSegmentID(spec.name)
                    segment = slicer.vtkSegment()
                    segment.DeepCopy(tmp_seg.GetSegment(src_id))
                    if not out_seg.AddSegment(segment, seg_id):
                        raise SegmentImportError(f"Could not add segment '{spec.name}'.")
                elif createMissing:
                    seg_id = out_seg.AddEmptySegment(out_seg.GenerateUniqueSegmentID(spec.name), spec.name)
                else:
                    continue
                segment = out_seg.GetSegment(seg_id)
                segment.SetName(spec.name)
                segment.SetColor(*spec.color)
                if spec.terminology:
                    set_terminology(segment, spec.terminology)
                ids.append(seg_id)
        finally:
            segmentationNode.EndModify(was_modifying)
        if segmentationNode.GetDisplayNode() is None:
            segmentationNode.CreateDefaultDisplayNodes()
        place_next_to(segmentationNode, referenceVolumeNode)
        return ids
    finally:
        storage.UnRegister(None)
        remove_node(tmp)
        remove_node(ct)


def segment_array(segmentationNode, segmentId, referenceVolumeNode):
    """KJI uint8 array of one segment on the grid of ``referenceVolumeNode``."""
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)


def labelmap_array_from_segments(segmentationNode, labels, referenceVolumeNode):
    """Rebuild a KJI multi-label array (label values from ``labels``) on the grid of the reference volume."""
    import numpy as np

    out = None
    seg = segmentationNode.GetSegmentation()
    for spec in labels:
        seg_id = seg.GetSegmentIdBySegmentName(spec.name)
        if not seg_id:
            continue
        arr = segment_array(segmentationNode, seg_id, referenceVolumeNode)
        if out is None:
            out = np.zeros(arr.shape, np.int16)
        out[arr > 0] = spec.value
    if out is None:
        out = np.zeros(slicer.util.arrayFromVolume(referenceVolumeNode).shape, np.int16)
    return out
