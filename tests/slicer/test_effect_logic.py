"""Qt-free logic of the Light-UNETR Segment Editor effect on a real scene."""

import numpy as np
import pytest
import slicer

from LightUNETRSegmentationLib import scenarios, segments
from SegmentEditorLightUNETRLib import effectlogic, effectscenarios


def test_apply_respects_mask_and_maps_labels(scene):
    effectscenarios.apply_respects_mask_scenario()


def test_intensity_mask_and_inside_single_segment(scene):
    source = scenarios.add_volume("source", scenarios.test_pattern().astype(np.float32), "oblique")
    shape = slicer.util.arrayFromVolume(source).shape
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(source)
    box = seg.GetSegmentation().AddEmptySegment("box", "Box")
    arr = np.zeros(shape, np.uint8)
    arr[5:15, 5:15, 5:15] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(arr, seg, box, source)
    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID(box)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(100, 200)
    mask = effectlogic.editable_mask(editor, seg, source)
    values = slicer.util.arrayFromVolume(source)
    np.testing.assert_array_equal(mask, (arr > 0) & (values >= 100) & (values <= 200))
    assert mask.any() and not mask.all()


def test_map_labels_without_creating(scene):
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")
    seg.GetSegmentation().AddEmptySegment("a", "SPLEEN")
    labels = segments.label_specs_from_names(["bg", "Liver", "Spleen"])
    m = effectlogic.map_labels_to_segments(seg, labels, createMissing=False)
    assert m == {2: "a"}
    m = effectlogic.map_labels_to_segments(seg, labels)
    new = seg.GetSegmentation().GetSegment(m[1])
    assert new.GetName() == "Liver" and "Liver" in segments.get_terminology(new)


def test_view_region_roi(scene):
    roi = effectlogic.roi_from_ras_bounds([-10, 10, 0, 20, 5, 6])
    r = [0, 0, 0]
    roi.GetRadiusXYZ(r)
    assert r == pytest.approx([10, 10, 0.5])
