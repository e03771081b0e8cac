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


@pytest.mark.slow
def test_effect_session_preview_apply_and_discard(scene, tmp_path, tiny_bundle):
    """Asynchronous run into a hidden preview, then Apply into the edited segmentation (mask respected);
    a second session is cancelled and leaves nothing behind."""
    from LightUNETRSegmentationLib.logic import SegmentationLogic

    logic = SegmentationLogic(modelsFolder=str(tmp_path))
    logic.extraEnvironment = {"OMP_NUM_THREADS": "1"}
    source = scenarios.add_volume("src", scenarios.test_pattern((30, 34, 38), seed=7).astype(np.float32), "left-handed")
    shape = slicer.util.arrayFromVolume(source).shape
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edited")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(source)
    keep = seg.GetSegmentation().AddEmptySegment("keep", "Keep")
    keep_arr = np.zeros(shape, np.uint8)
    keep_arr[:, :10, :] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(keep_arr, seg, keep, source)
    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)

    session = effectlogic.EffectSession(logic, seg, source, tiny_bundle, device="cpu").start()
    assert not session.done and session.preview.GetHideFromEditors()
    assert session.wait(timeout=300) == "completed", session.job.message
    preview_labels = {}
    for spec in session.model.labels:
        pid = session.preview.GetSegmentation().GetSegmentIdBySegmentName(spec.name)
        preview_labels[spec.value] = slicer.util.arrayFromSegmentBinaryLabelmap(session.preview, pid, source) > 0
    assert any(a.any() for a in preview_labels.values())
    assert seg.GetSegmentation().GetNumberOfSegments() == 1, "the edited segmentation changed before Apply"
    mapping = session.accept(editor)
    assert session.preview is None and not [n for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
                                            if n.GetName().startswith(effectlogic.PREVIEW_NAME)]
    for value, sid in mapping.items():
        got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, source) > 0
        np.testing.assert_array_equal(got, preview_labels[value] & (keep_arr == 0))
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg, keep, source), keep_arr)

    n_nodes = scene.GetNumberOfNodes()
    second = effectlogic.EffectSession(logic, seg, source, tiny_bundle, device="cpu").start()
    second.discard()
    assert second.job.wait(timeout=120) == "cancelled"
    assert scene.GetNumberOfNodes() == n_nodes
