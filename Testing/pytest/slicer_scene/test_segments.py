"""Segment names, colours, terminology, subject-hierarchy placement and failure behaviour of the import."""

import numpy as np
import pytest
import slicer

from LightUNETRSlicerLib import segments, volumeio
from LightUNETRScenarios import segmentation as scenarios


def _write_labels(tmp_path, arr, geometry="oblique"):
    node = scenarios.add_volume("lab", arr, geometry, labelmap=True)
    path = volumeio.export_volume(node, str(tmp_path / "labels.nrrd"))
    slicer.mrmlScene.RemoveNode(node)
    return path


def test_names_colours_terminology(scene, tmp_path, vtk_errors):
    path = _write_labels(tmp_path, scenarios.label_pattern())
    ref = scenarios.add_volume("ref", scenarios.test_pattern(), "oblique")
    specs = [
        segments.LabelSpec(1, "Left atrium"),
        segments.LabelSpec(2, "myocardium scar", color=(10, 200, 30)),
        segments.LabelSpec(3, "Tumor"),
        segments.LabelSpec(4, "Absent structure"),
    ]
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    ids = segments.import_labelmap_file(path, seg, specs, referenceVolumeNode=ref)
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetSegment(i).GetName() for i in ids] == [s.name for s in specs]
    la = segmentation.GetSegment(ids[0])
    assert la.GetColor() == pytest.approx((0.81, 0.26, 0.26))
    assert "SCT^82471001^Left atrium" in segments.get_terminology(la)
    scar = segmentation.GetSegment(ids[1])
    assert scar.GetColor() == pytest.approx((10 / 255, 200 / 255, 30 / 255))
    assert "99LIGHTUNETR^2^myocardium scar" in segments.get_terminology(scar)
    tumor = segmentation.GetSegment(ids[2])
    assert "SCT^108369006^Neoplasm" in segments.get_terminology(tumor)
    assert "SCT^49755003" in segments.get_terminology(tumor)
    # A label the result does not contain still gets its (empty) segment.
    assert not slicer.util.arrayFromSegmentBinaryLabelmap(seg, ids[3], ref).any()
    # Reference geometry is the input volume.
    assert seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole()) == ref.GetID()
    assert "ERROR" not in vtk_errors(), vtk_errors()


def test_replace_same_names_keep_others(scene, tmp_path):
    path = _write_labels(tmp_path, scenarios.label_pattern())
    ref = scenarios.add_volume("ref", scenarios.test_pattern(), "oblique")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ref)
    keep_id = seg.GetSegmentation().AddEmptySegment("manual", "Manual edit")
    old_liver = seg.GetSegmentation().AddEmptySegment("liver_old", "Liver")
    full = np.ones(slicer.util.arrayFromVolume(ref).shape, np.uint8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(full, seg, old_liver, ref)
    specs = segments.label_specs_from_names(["bg", "Liver", "Spleen", "Tumor"])
    segments.import_labelmap_file(path, seg, specs, referenceVolumeNode=ref)
    s = seg.GetSegmentation()
    names = sorted(s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments()))
    assert names == ["Liver", "Manual edit", "Spleen", "Tumor"]
    assert s.GetSegment(keep_id) is not None
    liver = s.GetSegmentIdBySegmentName("Liver")
    got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, liver, ref)
    np.testing.assert_array_equal(got > 0, scenarios.label_pattern() == 1)


def test_unknown_label_fails_and_leaves_scene_untouched(scene, tmp_path):
    path = _write_labels(tmp_path, scenarios.label_pattern())
    ref = scenarios.add_volume("ref", scenarios.test_pattern(), "oblique")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    seg.GetSegmentation().AddEmptySegment("x", "X")
    n_nodes = scene.GetNumberOfNodes()
    mtime = seg.GetSegmentation().GetMTime()
    specs = segments.label_specs_from_names(["bg", "Liver", "Spleen"])  # the file also has label 3
    with pytest.raises(segments.SegmentImportError, match="does not define"):
        segments.import_labelmap_file(path, seg, specs, referenceVolumeNode=ref)
    assert scene.GetNumberOfNodes() == n_nodes
    assert seg.GetSegmentation().GetMTime() == mtime
    assert seg.GetSegmentation().GetNumberOfSegments() == 1


def test_bad_label_specs_are_messages():
    assert "unique" in segments.validate_label_specs(
        [segments.LabelSpec(1, "A"), segments.LabelSpec(2, "a")]
    )
    assert "no foreground" in segments.validate_label_specs([])
    assert segments.validate_label_specs(segments.label_specs_from_names({1: "A", 3: "B"})) is None


def test_subject_hierarchy_and_transform_next_to_input(scene, tmp_path):
    path = _write_labels(tmp_path, scenarios.label_pattern())
    ref = scenarios.add_volume("ref", scenarios.test_pattern(), "oblique")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "Study A")
    _, ref_item = segments.ensure_sh_item(ref)
    sh.SetItemParent(ref_item, study)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    ref.SetAndObserveTransformNodeID(transform.GetID())
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    segments.import_labelmap_file(path, seg, segments.label_specs_from_names(["bg", "a", "b", "c"]), ref)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study
    assert seg.GetTransformNodeID() == transform.GetID()
