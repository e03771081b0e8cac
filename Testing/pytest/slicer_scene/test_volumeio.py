"""Voxel-exact volume export and labelmap import through storage nodes, for oblique, anisotropic and
left-handed geometries (checked against SimpleITK reading/writing the same files)."""

import os

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from LightUNETRSlicerLib import segments, volumeio
from LightUNETRScenarios import segmentation as scenarios
from sitk_helpers import is_right_handed, sitk_image, values_at_ras, voxel_table_ras

GEOMS = ["anisotropic", "oblique", "left-handed", "left-handed-oblique"]


@pytest.mark.parametrize("geometry", GEOMS)
@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz"])
def test_read_then_export_is_voxel_exact(scene, tmp_path, geometry, ext):
    arr = scenarios.test_pattern()
    original = sitk_image(arr, geometry)
    src = str(tmp_path / f"orig{ext}")
    sitk.WriteImage(original, src)
    assert is_right_handed(original) == (not geometry.startswith("left"))

    node = volumeio.read_volume(src)
    # Slicer's view of the file: every voxel at the same RAS place with the same value.
    ras, vals = scenarios.physical_voxel_table(node)
    np.testing.assert_array_equal(values_at_ras(original, ras), vals)
    # Slicer makes volumes right-handed on load.
    assert np.linalg.det(volumeio.ijk_to_ras(node)[:3, :3]) > 0

    out = volumeio.export_volume(node, str(tmp_path / "exported.nrrd"))
    exported = sitk.ReadImage(out)
    ras_e, vals_e = voxel_table_ras(exported)
    np.testing.assert_array_equal(values_at_ras(original, ras_e), vals_e)
    assert vals_e.size == arr.size
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")], "temporary file left behind"


@pytest.mark.parametrize("geometry", GEOMS)
def test_import_labelmap_is_voxel_exact(scene, tmp_path, geometry, vtk_errors):
    """A label file written by SimpleITK in the input's geometry becomes segments that match it voxel by
    voxel on the grid of the input volume as Slicer loaded it."""
    image = sitk_image(scenarios.test_pattern(), geometry)
    labels = sitk_image(scenarios.label_pattern(), geometry)
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    volume = volumeio.read_volume(str(tmp_path / "image.nii.gz"))

    specs = segments.label_specs_from_names(["background", "Liver", "Spleen", "Tumor"])
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    ids = segments.import_labelmap_file(str(tmp_path / "labels.nii.gz"), seg, specs, referenceVolumeNode=volume)
    assert len(ids) == 3

    ras, _ = scenarios.physical_voxel_table(volume)
    expected_labels = values_at_ras(labels, ras).reshape(slicer.util.arrayFromVolume(volume).shape)
    for spec, seg_id in zip(specs, ids):
        got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, seg_id, volume)
        np.testing.assert_array_equal(got > 0, expected_labels == spec.value, err_msg=spec.name)
    assert "ERROR" not in vtk_errors(), vtk_errors()
    # Only the output segmentation is left (no temporary nodes, no colour table).
    assert not slicer.util.getNodes("__LightUNETR*")
    assert not [n for n in slicer.util.getNodesByClass("vtkMRMLColorTableNode") if n.GetName() == "LightUNETR labels"]


@pytest.mark.parametrize("geometry", ["oblique", "left-handed"])
def test_roundtrip_scenario(scene, tmp_path, geometry):
    """The same scenario the Slicer self-test runs."""
    seg = scenarios.roundtrip_labels_scenario(str(tmp_path), geometry)
    assert seg.GetSegmentation().GetNumberOfSegments() == 3


def test_export_without_image_data_is_a_message(scene, tmp_path):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(volumeio.VolumeIOError, match="no image data"):
        volumeio.export_volume(node, str(tmp_path / "x.nrrd"))
    assert not os.listdir(tmp_path)


def test_read_missing_file_adds_nothing(scene, tmp_path):
    before = scene.GetNumberOfNodes()
    with pytest.raises(volumeio.VolumeIOError, match="not found"):
        volumeio.read_volume(str(tmp_path / "missing.nrrd"))
    assert scene.GetNumberOfNodes() == before


def test_roi_crop_is_voxel_exact(scene):
    vol = scenarios.add_volume("vol", scenarios.test_pattern(), "oblique")
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    center = volumeio.ijk_to_ras(vol) @ np.array([10, 12, 8, 1.0])
    roi.SetCenter(*center[:3])
    roi.SetSize(12, 12, 12)
    m = volumeio.ijk_to_ras(vol)[:3, :3]
    import vtk

    roi_to_world = vtk.vtkMatrix4x4()
    axes = m / np.linalg.norm(m, axis=0)
    for r in range(3):
        for c in range(3):
            roi_to_world.SetElement(r, c, axes[r, c])
        roi_to_world.SetElement(r, 3, center[r])
    roi.GetObjectToNodeMatrix().DeepCopy(roi_to_world)
    cropped = volumeio.crop_to_roi(vol, roi)
    assert 0 < slicer.util.arrayFromVolume(cropped).size < slicer.util.arrayFromVolume(vol).size
    ras, vals = scenarios.physical_voxel_table(cropped)
    np.testing.assert_array_equal(scenarios.values_at_ras(vol, ras), vals)


def test_roi_outside_volume_is_a_message(scene):
    vol = scenarios.add_volume("vol", scenarios.test_pattern(), "anisotropic")
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenter(1000, 1000, 1000)
    roi.SetSize(5, 5, 5)
    n = scene.GetNumberOfNodes()
    with pytest.raises(volumeio.VolumeIOError, match="does not overlap"):
        volumeio.crop_to_roi(vol, roi)
    assert scene.GetNumberOfNodes() == n
