"""Qt-free logic of the "Light-UNETR" Segment Editor effect (tested with pytest on slicer-core).

Preview: the source volume, cropped to the chosen *region* (an inclusive IJK box of the source volume:
the whole volume, the voxels around an ROI, or those a slice view shows), is segmented in the background
(:meth:`~.logic.SegmentationLogic.processAsync`) into a hidden preview segmentation. The session
outlives the effect's deactivation: the user may leave the Segment Editor while a minutes-long run goes
on and come back to a finished preview.

Apply writes only through the segment editor's own modify API (a :class:`SegmentWriter`: in Slicer the
effect's ``scriptedEffect.modifySegmentByLabelmap``, here and in scripts ``vtkSlicerSegmentEditorLogic``,
which that method calls), so the editor's mask mode, editable intensity range and overwrite mode apply,
and one undo step restores everything. For each model label, the mapped segment is cleared inside the
region (``ModificationModeRemove``) and the predicted voxels are added (``ModificationModeAdd``), each with
a modifier labelmap that covers only the region: ``ModificationModeSet`` is not used because it clears
the whole segment, outside the modifier's extent too (``vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap``
merges the inverted segment over its full extent).
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from LightUNETRSlicerLib import generated, segments as seglib, volumeio

PREVIEW_NAME = "Light-UNETR preview"
MODIFY_REMOVE, MODIFY_ADD = "remove", "add"


# ---------------------------------------------------------------------------------------------- writers
class SegmentEditorLogicWriter:
    """:class:`SegmentWriter` over a ``vtkSlicerSegmentEditorLogic`` (what the Segment Editor uses under the
    hood; ``qSlicerSegmentEditorAbstractEffect::modifySegmentByLabelmap`` forwards to its
    ``ModifySegmentByLabelmap`` with ``isPerSegment`` = the effect's ``perSegment`` (False for ours) and
    ``bypassMasking`` False). For scripts and tests; the effect has its own writer over ``scriptedEffect``.

    A writer has ``editor_node()`` (the ``vtkMRMLSegmentEditorNode``), ``reference_geometry()`` (the
    editor's modifier labelmap: the segmentation's geometry), ``save_state_for_undo()`` and
    ``modify(segmentationNode, segmentId, modifier, mode)`` with ``mode`` :data:`MODIFY_REMOVE` or
    :data:`MODIFY_ADD`.
    """

    def __init__(self, editorLogic):
        self.logic = editorLogic

    def editor_node(self):
        return self.logic.GetSegmentEditorNode()

    def reference_geometry(self):
        self.logic.ResetModifierLabelmapToDefault()
        return self.logic.GetModifierLabelmap()

    def save_state_for_undo(self) -> None:
        self.logic.SaveStateForUndo()

    def modify(self, segmentationNode, segmentId: str, modifier, mode: str) -> None:
        L = slicer.vtkSlicerSegmentEditorLogic
        code = {MODIFY_REMOVE: L.ModificationModeRemove, MODIFY_ADD: L.ModificationModeAdd}[mode]
        self.logic.ModifySegmentByLabelmap(segmentationNode, segmentId, modifier, code, False, False)


def segment_editor_logic(segmentEditorNode, sourceVolumeNode, scene=None, appLogic=None):
    """A ``vtkSlicerSegmentEditorLogic`` bound to an editor node (its segmentation) and a source volume.
    Keep a reference to the returned object while it is used."""
    scene = scene or segmentEditorNode.GetScene()
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(scene)
    if appLogic is not None:
        logic.SetMRMLApplicationLogic(appLogic)
    logic.SetSegmentEditorNode(segmentEditorNode)
    logic.SetSourceVolumeNode(sourceVolumeNode)
    return logic


# ---------------------------------------------------------------------------------------------- labels
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


# ---------------------------------------------------------------------------------------------- regions
def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(m: np.ndarray):
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def node_to_node_matrix(fromNode, toNode) -> np.ndarray:
    """4x4 matrix from ``fromNode``'s local coordinates to ``toNode``'s (their linear parent transforms)."""
    m = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(fromNode.GetParentTransformNode(),
                                                              toNode.GetParentTransformNode(), m)
    return _matrix(m)


def whole_volume_box(volumeNode):
    dims = volumeNode.GetImageData().GetDimensions()
    return (np.zeros(3, int), np.array(dims, int) - 1)


def slice_view_box(volumeNode, sliceNode):
    """The voxels of ``volumeNode`` a slice view shows: the view's in-plane rectangle
    (``sliceNode.GetXYToRAS()`` and ``GetDimensions()``) swept through the volume along the view's normal,
    as an inclusive IJK box (clipped; None when the view shows none of the volume)."""
    xy_to_ras = _matrix(sliceNode.GetXYToRAS())
    w, h = sliceNode.GetDimensions()[:2]
    normal = xy_to_ras[:3, 2] / max(np.linalg.norm(xy_to_ras[:3, 2]), 1e-12)
    ijk_to_ras = volumeio.ijk_to_ras(volumeNode)
    dims = np.array(volumeNode.GetImageData().GetDimensions())
    corners_ijk = np.array([[i, j, k, 1.0] for i in (0, dims[0] - 1) for j in (0, dims[1] - 1) for k in (0, dims[2] - 1)]).T
    reach = np.linalg.norm((ijk_to_ras @ corners_ijk)[:3].T - (ijk_to_ras @ np.array([0, 0, 0, 1.0]))[:3], axis=1).max() + 1.0
    ras = []
    for x in (0, w):
        for y in (0, h):
            p = (xy_to_ras @ np.array([x, y, 0.0, 1.0]))[:3]
            ras += [p - reach * normal, p + reach * normal]
    world_to_local = np.linalg.inv(_world_matrix(volumeNode))
    ijk = np.linalg.inv(ijk_to_ras) @ world_to_local @ np.vstack([np.array(ras).T, np.ones(len(ras))])
    lo = np.ceil(ijk[:3].min(axis=1) - 0.5 - 1e-4).astype(int)
    hi = np.floor(ijk[:3].max(axis=1) + 0.5 + 1e-4).astype(int)
    return volumeio.clip_box(volumeNode, (lo, hi))


def _world_matrix(node) -> np.ndarray:
    """Local → world matrix of a node (identity without a parent transform)."""
    m = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(node.GetParentTransformNode(), None, m)
    return _matrix(m)


def _image_to_world(image) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    return _matrix(m)


def region_on_reference(reference, sourceVolumeNode, box, segmentationNode):
    """Where the region ``box`` (inclusive IJK box of ``sourceVolumeNode``) lies on the editor's
    reference geometry ``reference`` (a ``vtkOrientedImageData`` in ``segmentationNode``'s coordinates).

    Returns ``(extent, mask)``: the smallest extent of ``reference`` voxels that holds the region (clipped
    to ``reference``'s extent) and a KJI bool array over that extent, True for the voxels whose centre lies
    inside the region's box. ``(None, None)`` when they do not overlap."""
    ref_to_src_ijk = (np.linalg.inv(volumeio.ijk_to_ras(sourceVolumeNode)) @ node_to_node_matrix(segmentationNode, sourceVolumeNode)
                      @ _image_to_world(reference))
    src_to_ref_ijk = np.linalg.inv(ref_to_src_ijk)
    lo, hi = (np.asarray(b, float) for b in box)
    ext = np.array(reference.GetExtent())
    same_grid = (np.allclose(ref_to_src_ijk[:3, :3], np.eye(3), atol=1e-6)
                 and np.allclose(ref_to_src_ijk[:3, 3], np.rint(ref_to_src_ijk[:3, 3]), atol=1e-6))
    if same_grid:  # same axes and spacing, whole-voxel shift: the box maps onto whole voxels exactly
        shift = np.rint(src_to_ref_ijk[:3, 3]).astype(int)
        e_lo = np.maximum(lo.astype(int) + shift, ext[0::2])
        e_hi = np.minimum(hi.astype(int) + shift, ext[1::2])
    else:
        corners = np.array([[x, y, z, 1.0] for x in (lo[0] - 0.5, hi[0] + 0.5) for y in (lo[1] - 0.5, hi[1] + 0.5)
                            for z in (lo[2] - 0.5, hi[2] + 0.5)]).T
        ref_corners = (src_to_ref_ijk @ corners)[:3]
        e_lo = np.maximum(np.floor(ref_corners.min(axis=1) + 0.5 + 1e-6).astype(int), ext[0::2])
        e_hi = np.minimum(np.ceil(ref_corners.max(axis=1) - 0.5 - 1e-6).astype(int), ext[1::2])
    if (e_hi < e_lo).any():
        return None, None
    shape_kji = tuple(int(n) for n in (e_hi - e_lo + 1)[::-1])
    if same_grid:
        mask = np.ones(shape_kji, bool)
    else:
        mask = np.zeros(shape_kji, bool)
        ii, jj = np.meshgrid(np.arange(e_lo[0], e_hi[0] + 1), np.arange(e_lo[1], e_hi[1] + 1), indexing="xy")
        plane = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size), np.ones(ii.size)])
        eps = 1e-6
        for n, k in enumerate(range(e_lo[2], e_hi[2] + 1)):  # one slice at a time: bounded memory
            plane[2] = k
            src = (ref_to_src_ijk @ plane)[:3]
            inside = ((src >= (lo - 0.5 - eps)[:, None]) & (src <= (hi + 0.5 + eps)[:, None])).all(axis=0)
            mask[n] = inside.reshape(ii.shape)
    extent = (int(e_lo[0]), int(e_hi[0]), int(e_lo[1]), int(e_hi[1]), int(e_lo[2]), int(e_hi[2]))
    return extent, mask


def labelmap_image(reference, extent, mask_kji):
    """A uint8 ``vtkOrientedImageData`` on ``reference``'s geometry, covering ``extent``, holding ``mask``."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*extent)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.SetImageToWorldMatrix(_vtk_matrix(_image_to_world(reference)))
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(mask_kji.shape)
    arr[:] = mask_kji.astype(np.uint8)
    image.Modified()
    return image


def preview_mask(previewNode, segmentId, reference, extent, segmentationNode) -> np.ndarray:
    """KJI bool array of one preview segment resampled (nearest neighbour) onto ``reference`` over ``extent``."""
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    source = slicer.vtkOrientedImageData()
    if not previewNode.GetBinaryLabelmapRepresentation(segmentId, source):
        return np.zeros(shape, bool)
    e = source.GetExtent()
    if e[1] < e[0] or e[3] < e[2] or e[5] < e[4]:
        return np.zeros(shape, bool)
    target = labelmap_image(reference, extent, np.zeros(shape, bool))
    transform = None
    m = node_to_node_matrix(previewNode, segmentationNode)
    if not np.allclose(m, np.eye(4), atol=1e-9):
        transform = vtk.vtkTransform()
        transform.SetMatrix(_vtk_matrix(m))
    out = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            source, target, out, False, False, transform, 0):
        raise RuntimeError("could not resample the preview onto the segmentation's geometry")
    arr = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(shape)
    return arr > 0


def apply_preview(writer, previewNode, segmentationNode, labels, sourceVolumeNode, box=None,
                  mapping: dict | None = None) -> dict:
    """Copy the preview into ``segmentationNode`` through ``writer`` (one undo step): for each label, the
    segment chosen by :func:`map_labels_to_segments` (created when missing) becomes the prediction inside
    the region ``box`` (default: the whole source volume), within the editor's editable area, overwriting
    other segments as the editor's overwrite mode says; outside the region nothing changes. Returns the
    label → segment ID mapping.

    Each segment is written while it is the editor's selected segment, as if the user had selected it and
    painted: the editor computes the editable area relative to the selected segment
    (``vtkSlicerSegmentEditorLogic::UpdateMaskLabelmap`` → ``GenerateEditMask``), so with "outside all
    segments" a segment being replaced does not protect its own old voxels. The selection is restored."""
    box = whole_volume_box(sourceVolumeNode) if box is None else box
    reference = writer.reference_geometry()
    if reference is None:
        raise RuntimeError("The segment editor has no reference geometry; select a segmentation and a source volume.")
    extent, region = region_on_reference(reference, sourceVolumeNode, box, segmentationNode)
    predicted = {}
    if extent is not None:  # resample everything first: a failure leaves the segmentation as it was
        prev = previewNode.GetSegmentation()
        for spec in labels:
            pid = prev.GetSegmentIdBySegmentName(spec.name)
            mask = preview_mask(previewNode, pid, reference, extent, segmentationNode) if pid else np.zeros(region.shape, bool)
            predicted[spec.value] = labelmap_image(reference, extent, mask & region)
        remove = labelmap_image(reference, extent, region)
    writer.save_state_for_undo()
    target = map_labels_to_segments(segmentationNode, labels, mapping)
    predicted = {v: m for v, m in predicted.items() if v in target}
    editor = writer.editor_node()
    selected = editor.GetSelectedSegmentID() if editor is not None else None
    try:
        for value, modifier in predicted.items():
            sid = target[value]
            if editor is not None:
                editor.SetSelectedSegmentID(sid)
            writer.modify(segmentationNode, sid, remove, MODIFY_REMOVE)
            writer.modify(segmentationNode, sid, modifier, MODIFY_ADD)
    finally:
        if editor is not None:
            editor.SetSelectedSegmentID(selected)
    return target


# ---------------------------------------------------------------------------------------------- session
class EffectSession:
    """One preview run: owns the hidden preview node; ``start`` → ``poll`` → ``accept``/``discard``.

    ``box``: the region, an inclusive IJK box of ``sourceVolumeNode`` (None: the whole volume).
    """

    def __init__(self, logic, segmentationNode, sourceVolumeNode, model, device="auto", box=None,
                 mapping=None, **options):
        self.logic = logic
        self.segmentationNode = segmentationNode
        self.sourceVolumeNode = sourceVolumeNode
        self.model = logic.resolveModel(model)
        self.device, self.box, self.mapping, self.options = device, box, mapping, options
        self.preview = None
        self.job = None

    def start(self) -> "EffectSession":
        scene = self.segmentationNode.GetScene()
        self.preview = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(PREVIEW_NAME))
        self.preview.SetHideFromEditors(True)
        generated.mark_generated(self.preview, self.model.name, "preview")
        options = dict(self.options)
        if self.box is not None:
            options["ijkBox"] = self.box
        self.job = self.logic.processAsync(self.sourceVolumeNode, self.preview, self.model, device=self.device,
                                           **options)
        if self.job.done and not self.job.ok:
            self._remove_preview()
        return self

    @property
    def done(self) -> bool:
        return self.job is None or self.job.done

    @property
    def ready(self) -> bool:
        """A finished preview waits to be applied or discarded."""
        return self.job is not None and self.job.ok and self.preview is not None

    def poll(self) -> bool:
        still = self.job.poll() if self.job else False
        if not still and self.job is not None and not self.job.ok:
            self._remove_preview()
        return still

    def wait(self, timeout=None):
        status = self.job.wait(timeout)
        self.poll()
        return status

    def matches(self, segmentationNode, sourceVolumeNode) -> bool:
        """True when the editor still edits the segmentation and source volume this preview was made for."""
        return segmentationNode is self.segmentationNode and sourceVolumeNode is self.sourceVolumeNode

    def set_preview_visible(self, visible: bool) -> None:
        if self.preview is not None and self.preview.GetDisplayNode() is not None:
            self.preview.GetDisplayNode().SetVisibility(bool(visible))

    def accept(self, writer) -> dict:
        """Apply the finished preview through ``writer`` (see :func:`apply_preview`), then discard it."""
        if not self.ready:
            raise RuntimeError("No finished preview to apply.")
        mapping = apply_preview(writer, self.preview, self.segmentationNode, self.model.labels, self.sourceVolumeNode,
                                self.box, self.mapping)
        self.discard()
        return mapping

    def discard(self) -> None:
        """Cancel a running job (its process tree is stopped) and remove the preview."""
        if self.job is not None and not self.job.done:
            self.job.cancel()
        self._remove_preview()

    def _remove_preview(self) -> None:
        if self.preview is not None:
            seglib.remove_node(self.preview)
            self.preview = None
