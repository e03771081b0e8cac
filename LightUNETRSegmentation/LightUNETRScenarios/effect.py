"""Effect scenarios shared by pytest (slicer-core) and the LightUNETRSegmentation self-test (real Slicer).

They apply a known preview through Slicer's own segment editor logic (``vtkSlicerSegmentEditorLogic``,
what the effect's ``modifySegmentByLabelmap`` calls) and check, voxel by voxel on the source grid, what
the editor's rules promise: nothing changes outside the region; inside it a mapped segment becomes the
prediction wherever the editable area allows; other segments lose the predicted voxels only when the
overwrite mode says so; one undo restores the segmentation.
"""

from __future__ import annotations

import numpy as np
import slicer

from LightUNETRSlicerLib import segments
from LightUNETRSegmentationLib import effectlogic

from LightUNETRScenarios import segmentation as scenarios

LABEL_NAMES = ["background", "Liver", "Spleen", "Tumor"]


def preview_from_labels(label_kji, labels, reference):
    """A preview segmentation holding ``label_kji`` (what a finished run puts in the preview)."""
    preview = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", effectlogic.PREVIEW_NAME)
    preview.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for spec in labels:
        sid = preview.GetSegmentation().AddEmptySegment(spec.name, spec.name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((label_kji == spec.value).astype(np.uint8), preview, sid,
                                                         reference)
    return preview


def _snapshot(seg, source):
    s = seg.GetSegmentation()
    return {s.GetNthSegmentID(i): slicer.util.arrayFromSegmentBinaryLabelmap(seg, s.GetNthSegmentID(i), source) > 0
            for i in range(s.GetNumberOfSegments())}


def _check(name, got, expected):
    if not np.array_equal(got, expected):
        raise AssertionError(f"{name}: {int(np.count_nonzero(got != expected))} voxel(s) differ from the expected result")


def apply_scenario(overwrite="all", mask="everywhere", geometry="left-handed-oblique", region="box", appLogic=None):
    """One Apply through the real editor logic, then one Undo; raises AssertionError on any difference.

    ``overwrite``: "all" | "none"; ``mask``: "everywhere" | "outside-all" (a segment "Protected" may not be
    edited) | "intensity" (only source values 100..250 may be edited); ``region``: "box" (a sub-box of the
    volume, as from an ROI) | "whole". Returns the label → segment ID mapping.
    """
    source = scenarios.add_volume("source", scenarios.test_pattern((20, 24, 28), seed=3).astype(np.float32), geometry)
    shape = slicer.util.arrayFromVolume(source).shape
    labels = segments.label_specs_from_names(LABEL_NAMES)
    predicted = scenarios.label_pattern(shape)

    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edited")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(source)
    seg.CreateDefaultDisplayNodes()
    s = seg.GetSegmentation()
    liver_id = s.AddEmptySegment("my_liver", "liver")  # matched to label "Liver" case-insensitively
    other_id = s.AddEmptySegment("other", "Other")  # not a model label: only overwrite may change it
    protected_id = s.AddEmptySegment("protected", "Protected")
    old_liver = np.zeros(shape, bool)
    old_liver[-4:, :, :] = True  # crosses the region's border: must change inside it only
    other = np.zeros(shape, bool)
    other[:, : shape[1] // 2, :] = True  # overlaps predicted labels inside and outside the region
    protected = np.zeros(shape, bool)
    protected[:, :, : shape[2] // 4] = True
    for sid, arr in ((liver_id, old_liver), (other_id, other), (protected_id, protected)):
        slicer.util.updateSegmentBinaryLabelmapFromArray(arr.astype(np.uint8), seg, sid, source)

    editor_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor_node.SetAndObserveSegmentationNode(seg)
    editor_node.SetAndObserveSourceVolumeNode(source)
    editor_node.SetSelectedSegmentID(other_id)
    N = slicer.vtkMRMLSegmentEditorNode
    editor_node.SetOverwriteMode({"all": N.OverwriteAllSegments, "none": N.OverwriteNone}[overwrite])
    values = slicer.util.arrayFromVolume(source)
    editable = np.ones(shape, bool)
    if mask == "outside-all":
        editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    elif mask == "intensity":
        editor_node.SetSourceVolumeIntensityMask(True)
        editor_node.SetSourceVolumeIntensityMaskRange(100, 250)
        editable = (values >= 100) & (values <= 250)
    elif mask != "everywhere":
        raise ValueError(mask)

    box = None
    in_region = np.ones(shape, bool)
    if region == "box":
        lo, hi = np.array([3, 2, 1]), np.array([shape[2] - 4, shape[1] - 3, shape[0] - 3])  # IJK, inclusive
        box = (lo, hi)
        in_region = np.zeros(shape, bool)
        in_region[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = True

    preview = preview_from_labels(predicted, labels, source)
    before = _snapshot(seg, source)
    n_before = s.GetNumberOfSegments()
    editor_logic = effectlogic.segment_editor_logic(editor_node, source, appLogic=appLogic)
    writer = effectlogic.SegmentEditorLogicWriter(editor_logic)
    mapping = effectlogic.apply_preview(writer, preview, seg, labels, source, box, mapping={3: "Lesion"})
    segments.remove_node(preview)

    if mapping[1] != liver_id:
        raise AssertionError("label 'Liver' was not mapped to the existing segment 'liver'")
    if s.GetSegment(mapping[3]).GetName() != "Lesion" or s.GetSegment(mapping[2]).GetName() != "Spleen":
        raise AssertionError("missing segments were not created with the mapped names")
    if editor_node.GetSelectedSegmentID() != other_id:
        raise AssertionError("the editor's selected segment was not restored")
    after = _snapshot(seg, source)
    claimed = np.zeros(shape, bool)
    for value, sid in mapping.items():
        old = before.get(sid, np.zeros(shape, bool))
        new_here = predicted == value
        if mask == "outside-all":
            # Editable for this segment: outside every other segment; the segments written before it hold
            # only voxels of other labels there, so only 'Other' and 'Protected' matter.
            seg_editable = ~before[other_id] & ~before[protected_id]
        else:
            seg_editable = editable
        inside = in_region & seg_editable
        _check(f"segment of label {value}", after[sid], np.where(inside, new_here, old))
        claimed |= new_here & inside
    expected_other = before[other_id] & ~claimed if overwrite == "all" and mask != "outside-all" else before[other_id]
    _check("segment 'Other'", after[other_id], expected_other)
    expected_protected = before[protected_id] & ~claimed if overwrite == "all" and mask != "outside-all" else before[protected_id]
    _check("segment 'Protected'", after[protected_id], expected_protected)
    for sid, arr in after.items():
        _check(f"segment {sid} outside the region", arr[~in_region], before.get(sid, np.zeros(shape, bool))[~in_region])

    editor_logic.Undo()
    if s.GetNumberOfSegments() != n_before:
        raise AssertionError("undo did not remove the segments Apply created")
    for sid, arr in _snapshot(seg, source).items():
        _check(f"segment {sid} after undo", arr, before[sid])
    return mapping
