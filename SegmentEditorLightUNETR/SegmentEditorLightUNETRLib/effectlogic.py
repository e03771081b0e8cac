"""Qt-free logic of the "Light-UNETR" Segment Editor effect (tested with pytest on slicer-core).

Flow: the effect exports the source volume (``sourceVolumeImageData`` copied into a temporary volume
node), optionally restricted to an ROI or to the region shown in a view, and starts
:meth:`LightUNETRSegmentationLib.logic.SegmentationLogic.processAsync` into a hidden *preview*
segmentation. Apply copies the preview into the edited segmentation: each model label goes to the
segment chosen for it (created when missing), only inside the editable area (mask settings of the
segment editor node), after ``saveStateForUndo``. Cancel discards the preview.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from LightUNETRSegmentationLib import segments as seglib

PREVIEW_NAME = "Light-UNETR preview"


def map_labels_to_segments(segmentationNode, labels, mapping: dict | None = None, createMissing: bool = True) -> dict:
    """{label value: segment ID}. ``mapping`` (value → segment ID or name) wins; otherwise a segment with
    the label's name (case-insensitive) is used; otherwise one is created (name, colour, terminology)
    when ``createMissing``, else the label is skipped."""
    seg = segmentationNode.GetSegmentation()
    by_name = {}
    for i in range(seg.GetNumberOfSegments()):
        by_name.setdefault(seg.GetNthSegment(i).GetName().lower(), seg.GetNthSegmentID(i))
    result = {}
    for spec in labels:
        wanted = (mapping or {}).get(spec.value, (mapping or {}).get(str(spec.value)))
        if wanted:
            if seg.GetSegment(wanted) is not None:
                result[spec.value] = wanted
                continue
            if wanted.lower() in by_name:
                result[spec.value] = by_name[wanted.lower()]
                continue
        name = wanted or spec.name
        if not wanted and spec.name.lower() in by_name:
            result[spec.value] = by_name[spec.name.lower()]
        elif createMissing:
            seg_id = seg.AddEmptySegment(seg.GenerateUniqueSegmentID(name), name, list(spec.color))
            seglib.set_terminology(seg.GetSegment(seg_id), spec.terminology)
            result[spec.value] = seg_id
    return result


def _segment_arrays(segmentationNode, segmentIds, referenceVolumeNode):
    return {sid: slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, sid, referenceVolumeNode) > 0
            for sid in segmentIds}


def editable_mask(segmentEditorNode, segmentationNode, sourceVolumeNode, referenceVolumeNode=None,
                  editedSegmentIds=()) -> np.ndarray:
    """KJI bool array (on the reference grid) of where the segment editor's mask settings allow edits:
    mask mode (everywhere / inside or outside all, visible, or one segment) and the source-volume
    intensity range. Same rules as Slicer's segment editor."""
    ref = referenceVolumeNode or sourceVolumeNode
    shape = slicer.util.arrayFromVolume(ref).shape
    mask = np.ones(shape, bool)
    if segmentEditorNode is None:
        return mask
    N = slicer.vtkMRMLSegmentationNode
    mode = segmentEditorNode.GetMaskMode()
    seg = segmentationNode.GetSegmentation()
    ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    display = segmentationNode.GetDisplayNode()

    def union(sids):
        out = np.zeros(shape, bool)
        for sid in sids:
            if sid in editedSegmentIds:  # the segments being written do not mask themselves
                continue
            out |= slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, sid, ref) > 0
        return out

    visible = [s for s in ids if display is None or display.GetSegmentVisibility(s)]
    if mode == N.EditAllowedInsideAllSegments:
        mask &= union(ids)
    elif mode == N.EditAllowedInsideVisibleSegments:
        mask &= union(visible)
    elif mode == N.EditAllowedOutsideAllSegments:
        mask &= ~union(ids)
    elif mode == N.EditAllowedOutsideVisibleSegments:
        mask &= ~union(visible)
    elif mode == N.EditAllowedInsideSingleSegment:
        sid = segmentEditorNode.GetMaskSegmentID()
        if sid:
            mask &= slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, sid, ref) > 0
    if segmentEditorNode.GetSourceVolumeIntensityMask():
        lo, hi = segmentEditorNode.GetSourceVolumeIntensityMaskRange()
        values = slicer.util.arrayFromVolume(sourceVolumeNode)
        if values.shape == shape:
            mask &= (values >= lo) & (values <= hi)
    return mask


def apply_preview(previewNode, segmentationNode, labels, referenceVolumeNode, mapping: dict | None = None,
                  segmentEditorNode=None, sourceVolumeNode=None, overwriteOtherSegments: bool = True) -> dict:
    """Copy the preview labels into ``segmentationNode`` (label → segment per
    :func:`map_labels_to_segments`), only where :func:`editable_mask` allows. Voxels outside the editable
    area keep their old content. With ``overwriteOtherSegments`` a voxel set for one segment is removed
    from the other mapped segments (the labels are exclusive). Returns the label → segment mapping."""
    target = map_labels_to_segments(segmentationNode, labels, mapping)
    prev = previewNode.GetSegmentation()
    allowed = editable_mask(segmentEditorNode, segmentationNode, sourceVolumeNode or referenceVolumeNode,
                            referenceVolumeNode, editedSegmentIds=set(target.values()))
    new_arrays = {}
    for spec in labels:
        if spec.value not in target:
            continue
        pid = prev.GetSegmentIdBySegmentName(spec.name)
        if pid:
            new_arrays[spec.value] = slicer.util.arrayFromSegmentBinaryLabelmap(previewNode, pid, referenceVolumeNode) > 0
        else:
            new_arrays[spec.value] = np.zeros(allowed.shape, bool)
    old = _segment_arrays(segmentationNode, [target[v] for v in new_arrays], referenceVolumeNode)
    claimed = np.zeros(allowed.shape, bool)
    for arr in new_arrays.values():
        claimed |= arr & allowed
    wasModifying = segmentationNode.StartModify()
    try:
        for value, arr in new_arrays.items():
            sid = target[value]
            result = np.where(allowed, arr, old[sid])
            if overwriteOtherSegments:
                result &= ~(claimed & ~arr)
            _write_segment(segmentationNode, sid, result.astype(np.uint8), referenceVolumeNode)
    finally:
        segmentationNode.EndModify(wasModifying)
    return target


def _write_segment(segmentationNode, segmentId, array_kji, referenceVolumeNode):
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise ValueError(f"segment '{segmentId}' does not exist")
    slicer.util.updateSegmentBinaryLabelmapFromArray(array_kji, segmentationNode, segmentId, referenceVolumeNode)


def source_volume_node_from_oriented_image(orientedImage, name="__LightUNETR_source__", scene=None):
    """Temporary scalar volume node with the content and geometry of a ``vtkOrientedImageData`` (what
    ``scriptedEffect.sourceVolumeImageData()`` returns)."""
    scene = scene or slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.vtkSlicerSegmentationsModuleLogic.CopyOrientedImageDataToVolumeNode(orientedImage, node)
    return node


def roi_from_ras_bounds(bounds, name="__LightUNETR_view_region__", scene=None):
    """A (hidden) markups ROI node covering RAS bounds [xmin, xmax, ymin, ymax, zmin, zmax]; used for
    "current view region"."""
    scene = scene or slicer.mrmlScene
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetHideFromEditors(True)
    center = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
    size = [abs(bounds[1] - bounds[0]), abs(bounds[3] - bounds[2]), abs(bounds[5] - bounds[4])]
    roi.SetCenter(center)
    roi.SetSize(size)
    return roi


class EffectSession:
    """One preview run: owns the temporary nodes; ``start`` → ``poll`` → ``accept``/``discard``."""

    def __init__(self, logic, segmentationNode, sourceVolumeNode, model, device="auto", roiNode=None,
                 mapping=None, **options):
        self.logic = logic
        self.segmentationNode = segmentationNode
        self.sourceVolumeNode = sourceVolumeNode
        self.model = logic.resolveModel(model)
        self.device, self.roiNode, self.mapping, self.options = device, roiNode, mapping, options
        self.preview = None
        self.job = None

    def start(self):
        scene = self.segmentationNode.GetScene()
        self.preview = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(PREVIEW_NAME))
        self.preview.SetHideFromEditors(True)
        self.job = self.logic.processAsync(self.sourceVolumeNode, self.preview, self.model, device=self.device,
                                           roiNode=self.roiNode, **self.options)
        return self

    @property
    def done(self):
        return self.job is None or self.job.done

    def poll(self):
        return self.job.poll() if self.job else False

    def wait(self, timeout=None):
        return self.job.wait(timeout)

    def cancel(self):
        if self.job is not None:
            self.job.cancel()

    def accept(self, segmentEditorNode=None):
        if self.job is None or not self.job.ok:
            raise RuntimeError("No finished preview to apply.")
        mapping = apply_preview(self.preview, self.segmentationNode, self.model.labels, self.sourceVolumeNode,
                                self.mapping, segmentEditorNode, self.sourceVolumeNode)
        self.discard()
        return mapping

    def discard(self):
        if self.job is not None and not self.job.done:
            self.job.cancel()
        if self.preview is not None:
            seglib.remove_node(self.preview)
            self.preview = None
