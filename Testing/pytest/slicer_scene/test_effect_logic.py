"""Qt-free logic of the Light-UNETR Segment Editor effect on a real scene, applied through Slicer's own
``vtkSlicerSegmentEditorLogic`` (what the effect's ``modifySegmentByLabelmap`` calls)."""

import numpy as np
import pytest
import slicer
import vtk

from LightUNETRSlicerLib import generated, segments, volumeio
from LightUNETRSegmentationLib import effectlogic
from LightUNETRScenarios import effect as effectscenarios, segmentation as scenarios


@pytest.mark.parametrize("region", ["box", "whole"])
@pytest.mark.parametrize("mask", ["everywhere", "outside-all", "intensity"])
@pytest.mark.parametrize("overwrite", ["all", "none"])
def test_apply_through_the_segment_editor(scene, slicer_env, overwrite, mask, region):
    """Region, editable area, intensity range and overwrite mode as the editor defines them; undo restores."""
    effectscenarios.apply_scenario(overwrite, mask, "left-handed-oblique", region, appLogic=slicer_env.app_logic)


def test_apply_on_an_axial_volume(scene, slicer_env):
    effectscenarios.apply_scenario("all", "everywhere", "axial", "box", appLogic=slicer_env.app_logic)


def _segmentation_with_geometry(source, spacing_factor=0.5):
    """A segmentation whose labelmap geometry is the source grid refined by ``1/spacing_factor`` (what
    Segment Editor → Specify geometry → oversampling makes)."""
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fine")
    seg.CreateDefaultDisplayNodes()
    image = slicer.vtkOrientedImageData()
    m = vtk.vtkMatrix4x4()
    source.GetIJKToRASMatrix(m)
    ijk_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    fine = ijk_to_ras.copy()
    fine[:3, :3] = ijk_to_ras[:3, :3] * spacing_factor
    # the fine voxel (0,0,0) sits at the corner-side quarter of the coarse voxel (0,0,0)
    fine[:3, 3] = (ijk_to_ras @ np.array([-0.5 + spacing_factor / 2] * 3 + [1.0]))[:3]
    dims = np.array(source.GetImageData().GetDimensions())
    n = (dims / spacing_factor).astype(int)
    image.SetExtent(0, n[0] - 1, 0, n[1] - 1, 0, n[2] - 1)
    image.SetImageToWorldMatrix(effectlogic._vtk_matrix(fine))
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(image)
    seg.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry)
    return seg, fine, image


def test_region_and_preview_on_a_finer_segmentation_grid(scene, slicer_env):
    """When the segmentation's grid is not the source grid, the region holds exactly the fine voxels whose
    centre lies in the source box, and the preview lands on them by nearest neighbour."""
    source = scenarios.add_volume("src", scenarios.test_pattern((12, 14, 16)).astype(np.float32), "left-handed-oblique")
    shape = slicer.util.arrayFromVolume(source).shape
    labels = segments.label_specs_from_names(["bg", "A"])
    lab = np.zeros(shape, np.uint8)
    lab[3:9, 2:10, 4:12] = 1
    preview = effectscenarios.preview_from_labels(lab, labels, source)
    seg, fine, reference = _segmentation_with_geometry(source)
    box = (np.array([2, 3, 1]), np.array([11, 10, 9]))
    extent, region = effectlogic.region_on_reference(reference, source, box, seg)
    assert extent is not None
    # independent expectation: fine voxel centre → coarse IJK → inside the box (half-voxel margins)
    kk, jj, ii = np.meshgrid(*[np.arange(extent[2 * a], extent[2 * a + 1] + 1) for a in (2, 1, 0)], indexing="ij")
    pts = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    coarse = (np.linalg.inv(volumeio.ijk_to_ras(source)) @ fine @ pts)[:3]
    inside = ((coarse >= box[0][:, None] - 0.5) & (coarse <= box[1][:, None] + 0.5)).all(axis=0).reshape(region.shape)
    np.testing.assert_array_equal(region, inside)
    assert region.sum() == 8 * np.prod(box[1] - box[0] + 1)  # each coarse voxel holds 2x2x2 fine ones
    pid = preview.GetSegmentation().GetSegmentIdBySegmentName("A")
    got = effectlogic.preview_mask(preview, pid, reference, extent, seg)
    nearest = np.rint(coarse).astype(int)
    valid = ((nearest >= 0) & (nearest < np.array(shape[::-1])[:, None])).all(axis=0)
    want = np.zeros(valid.shape, bool)
    want[valid] = lab[nearest[2, valid], nearest[1, valid], nearest[0, valid]] > 0
    np.testing.assert_array_equal(got[region], want.reshape(region.shape)[region])


def test_region_outside_the_segmentation_is_empty(scene):
    source = scenarios.add_volume("src", scenarios.test_pattern((8, 8, 8)).astype(np.float32), "axial")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(source)
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(0, 7, 0, 7, 0, 7)
    reference.SetImageToWorldMatrix(effectlogic._vtk_matrix(volumeio.ijk_to_ras(source)))
    assert effectlogic.region_on_reference(reference, source, (np.array([20] * 3), np.array([25] * 3)), seg) == (None, None)


def test_slice_view_box(scene):
    """An axial slice view showing the middle of a volume covers that part in-plane and every slice."""
    source = scenarios.add_volume("src", scenarios.test_pattern((10, 40, 50)).astype(np.float32), "axial")
    view = slicer.vtkMRMLSliceNode()
    view.SetName("Red")
    view.SetLayoutName("Red")
    scene.AddNode(view)
    view.SetOrientationToAxial()
    view.SetDimensions(200, 100, 1)
    view.SetFieldOfView(20.0, 10.0, 1.0)  # mm: 20 x 10 voxels of 1 mm
    view.SetSliceOrigin(25.0, 20.0, 4.0)  # the axial test volume has IJK = RAS
    view.UpdateMatrices()
    lo, hi = effectlogic.slice_view_box(source, view)
    # in-plane: RAS x 15..35 mm, y 15..25 mm = the voxels the view shows (also partly); all 10 slices
    assert (lo.tolist(), hi.tolist()) == ([15, 15, 0], [35, 25, 9])


def test_map_labels_without_creating(scene):
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")
    seg.GetSegmentation().AddEmptySegment("a", "SPLEEN")
    labels = segments.label_specs_from_names(["bg", "Liver", "Spleen"])
    m = effectlogic.map_labels_to_segments(seg, labels, createMissing=False)
    assert m == {2: "a"}
    m = effectlogic.map_labels_to_segments(seg, labels)
    new = seg.GetSegmentation().GetSegment(m[1])
    assert new.GetName() == "Liver" and "Liver" in segments.get_terminology(new)


def test_apply_without_reference_changes_nothing(scene, slicer_env):
    source = scenarios.add_volume("src", scenarios.test_pattern().astype(np.float32), "oblique")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")
    labels = segments.label_specs_from_names(["bg", "Liver"])
    preview = effectscenarios.preview_from_labels(scenarios.label_pattern(), labels, source)

    class NoGeometry(effectlogic.SegmentEditorLogicWriter):
        def reference_geometry(self):
            return None

    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    writer = NoGeometry(effectlogic.segment_editor_logic(editor, source, appLogic=slicer_env.app_logic))
    with pytest.raises(RuntimeError, match="reference geometry"):
        effectlogic.apply_preview(writer, preview, seg, labels, source)
    assert seg.GetSegmentation().GetNumberOfSegments() == 0


@pytest.mark.slow
def test_effect_session_preview_survives_and_applies(scene, slicer_env, tmp_path, tiny_bundle):
    """An asynchronous run of a region into a hidden preview (marked as generated), then Apply through the
    editor logic: the mask is respected and nothing outside the region changes; a second session is
    discarded while running and leaves nothing behind, its process gone."""
    from LightUNETRSegmentationLib.logic import SegmentationLogic

    logic = SegmentationLogic(modelsFolder=str(tmp_path))
    logic.extraEnvironment = {"OMP_NUM_THREADS": "1"}
    source = scenarios.add_volume("src", scenarios.test_pattern((30, 34, 38), seed=7).astype(np.float32), "left-handed")
    shape = slicer.util.arrayFromVolume(source).shape
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edited")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(source)
    seg.CreateDefaultDisplayNodes()
    keep = seg.GetSegmentation().AddEmptySegment("keep", "Keep")
    keep_arr = np.zeros(shape, np.uint8)
    keep_arr[:, :10, :] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(keep_arr, seg, keep, source)
    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSegmentationNode(seg)
    editor.SetAndObserveSourceVolumeNode(source)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    box = (np.array([4, 3, 2]), np.array([30, 28, 25]))

    session = effectlogic.EffectSession(logic, seg, source, tiny_bundle, device="cpu", box=box).start()
    assert not session.done and session.preview.GetHideFromEditors()
    assert generated.generated_kind(session.preview) == "preview"
    assert session.wait(timeout=300) == "completed", session.job.message
    assert session.ready and session.matches(seg, source)
    preview_labels = {}
    for spec in session.model.labels:
        pid = session.preview.GetSegmentation().GetSegmentIdBySegmentName(spec.name)
        preview_labels[spec.value] = slicer.util.arrayFromSegmentBinaryLabelmap(session.preview, pid, source) > 0
    in_box = np.zeros(shape, bool)
    in_box[box[0][2]:box[1][2] + 1, box[0][1]:box[1][1] + 1, box[0][0]:box[1][0] + 1] = True
    assert any(a.any() for a in preview_labels.values())
    assert not any((a & ~in_box).any() for a in preview_labels.values()), "the run went outside its region"
    assert seg.GetSegmentation().GetNumberOfSegments() == 1, "the edited segmentation changed before Apply"
    writer = effectlogic.SegmentEditorLogicWriter(effectlogic.segment_editor_logic(editor, source, appLogic=slicer_env.app_logic))
    mapping = session.accept(writer)
    assert session.preview is None and not [n for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
                                            if n.GetName().startswith(effectlogic.PREVIEW_NAME)]
    for value, sid in mapping.items():
        got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, source) > 0
        np.testing.assert_array_equal(got, preview_labels[value] & (keep_arr == 0))
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg, keep, source), keep_arr)

    n_nodes = scene.GetNumberOfNodes()
    second = effectlogic.EffectSession(logic, seg, source, tiny_bundle, device="cpu").start()
    pid = second.job.runner.process.pid
    second.discard()
    assert second.job.wait(timeout=120) == "cancelled"
    assert scene.GetNumberOfNodes() == n_nodes
    from lightunetr_core.jobs import runner as jobrunner

    assert jobrunner.descendant_pids(pid) == []
