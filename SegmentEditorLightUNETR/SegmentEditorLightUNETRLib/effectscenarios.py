"""Effect scenarios shared by pytest (slicer-core) and the SegmentEditorLightUNETR self-test."""

import numpy as np
import slicer

from LightUNETRSegmentationLib import scenarios, segments
from SegmentEditorLightUNETRLib import effectlogic


def _preview_from_labels(label_kji, labels, reference):
    """A preview segmentation holding ``label_kji`` (what a finished run puts in the preview)."""
    preview = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", effectlogic.PREVIEW_NAME)
    preview.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for spec in labels:
        sid = preview.GetSegmentation().AddEmptySegment(spec.name, spec.name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((label_kji == spec.value).astype(np.uint8), preview, sid, reference)
    return preview


def apply_respects_mask_scenario():
    """Labels map to existing segments by name and new ones are created; Apply changes only the editable
    area (here: outside the segment 'Protected') and keeps old voxels elsewhere."""
    source = scenarios.add_volume("source", scenarios.test_pattern().astype(np.float32), "left-handed-oblique")
    shape = slicer.util.arrayFromVolume(source).shape
    labels = segments.label_specs_from_names(["background", "Liver", "Spleen", "Tumor"])
    lab = scenarios.label_pattern(shape)

    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edited")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(source)
    seg.CreateDefaultDisplayNodes()
    s = seg.GetSegmentation()
    liver_id = s.AddEmptySegment("my_liver", "liver")  # matched case-insensitively
    protected_id = s.AddEmptySegment("protected", "Protected")
    protected = np.zeros(shape, np.uint8)
    protected[:, :, : shape[2] // 3] = 1  # the left third may not be edited
    slicer.util.updateSegmentBinaryLabelmapFromArray(protected, seg, protected_id, source)
    old_liver = np.zeros(shape, np.uint8)
    old_liver[-3:, -3:, :] = 1  # will be outside the new liver: must be erased where editable
    slicer.util.updateSegmentBinaryLabelmapFromArray(old_liver, seg, liver_id, source)

    editor = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)

    preview = _preview_from_labels(lab, labels, source)
    mapping = effectlogic.apply_preview(preview, seg, labels, source, mapping={3: "Lesion"}, segmentEditorNode=editor,
                                        sourceVolumeNode=source)
    segments.remove_node(preview)

    if mapping[1] != liver_id:
        raise AssertionError("label 'Liver' was not mapped to the existing segment 'liver'")
    if s.GetSegment(mapping[3]).GetName() != "Lesion" or s.GetSegment(mapping[2]).GetName() != "Spleen":
        raise AssertionError("missing segments were not created with the mapped names")
    editable = protected == 0
    for value, sid in mapping.items():
        got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, source) > 0
        new = lab == value
        old = old_liver > 0 if sid == liver_id else np.zeros(shape, bool)
        expected = np.where(editable, new, old)
        if not np.array_equal(got, expected):
            raise AssertionError(f"label {value}: {np.count_nonzero(got != expected)} voxels differ")
    got_protected = slicer.util.arrayFromSegmentBinaryLabelmap(seg, protected_id, source)
    if not np.array_equal(got_protected, protected):
        raise AssertionError("the protected segment changed")
    return seg, mapping
