"""Scenarios shared by the pytest suite (slicer-core) and the Slicer self-test (real Slicer).

Only MRML, module logics and numpy: the same code runs in both places.
"""

from __future__ import annotations

import math
import os

import numpy as np
import slicer
import vtk

# name → (spacing, direction (3x3 columns = axis directions in RAS), origin)
GEOMETRIES = {
    "axial": ((1.0, 1.0, 1.0), np.eye(3), (0.0, 0.0, 0.0)),
    "anisotropic": ((0.7, 0.9, 2.5), np.eye(3), (-12.5, 30.25, 7.0)),
    "oblique": (
        (1.1, 0.8, 1.6),
        None,  # filled below: rotation about an oblique axis
        (14.0, -3.5, 22.0),
    ),
    "left-handed": ((0.9, 1.2, 1.5), np.diag([1.0, 1.0, -1.0]) @ np.eye(3), (5.0, -8.0, 40.0)),
}


def _rotation(axis, angle_deg):
    axis = np.asarray(axis, float)
    axis /= np.linalg.norm(axis)
    a = math.radians(angle_deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * K @ K


GEOMETRIES["oblique"] = (GEOMETRIES["oblique"][0], _rotation((1, 2, 3), 27.0), GEOMETRIES["oblique"][2])
# Left-handed *and* oblique: the case where a K-flip bug and a direction bug can hide each other.
GEOMETRIES["left-handed-oblique"] = ((1.0, 0.8, 1.3), _rotation((0, 1, 1), 20.0) @ np.diag([-1.0, 1.0, 1.0]), (0.0, 9.0, -4.0))


def ijk_to_ras_matrix(spacing, direction, origin) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def test_pattern(shape_kji=(20, 24, 28), seed=0) -> np.ndarray:
    """A KJI int16 volume without symmetries, so any flip or transpose changes it."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    arr = (3 * i + 7 * j + 13 * k).astype(np.int16) + rng.integers(0, 5, shape_kji).astype(np.int16)
    return arr


def label_pattern(shape_kji=(20, 24, 28)) -> np.ndarray:
    """Three asymmetric blobs (labels 1, 2, 3) in a KJI uint8 array."""
    lab = np.zeros(shape_kji, np.uint8)
    K, J, I = shape_kji
    lab[1 : K // 2, 2 : J // 3, 3 : I // 2] = 1
    lab[K // 2 : K - 2, J // 2 : J - 1, 1 : I // 4] = 2
    lab[2:5, J - 6 : J - 2, I - 9 : I - 1] = 3
    return lab


def add_volume(name, array_kji, geometry="oblique", labelmap=False, scene=None):
    """Volume node with the given KJI array and one of :data:`GEOMETRIES` (matrix set as-is, so a
    left-handed matrix stays left-handed in memory; files read by Slicer become right-handed)."""
    scene = scene or slicer.mrmlScene
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(array_kji), name=name, nodeClassName=cls)
    spacing, direction, origin = GEOMETRIES[geometry]
    m = vtk.vtkMatrix4x4()
    mat = ijk_to_ras_matrix(spacing, direction, origin)
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, mat[r, c])
    node.SetIJKToRASMatrix(m)
    return node


def physical_voxel_table(volumeNode):
    """(N,3) RAS centres and (N,) values of all voxels of a node (for voxel-exact comparisons that do
    not depend on array order or handedness)."""
    arr = slicer.util.arrayFromVolume(volumeNode)
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    M = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    k, j, i = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij")
    ijk1 = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)], axis=0)
    ras = (M @ ijk1)[:3].T
    return ras, arr.ravel().copy()


def values_at_ras(volumeNode, ras_points, tol=1e-3):
    """Values of ``volumeNode`` at RAS points that must be voxel centres; raises if one is not."""
    arr = slicer.util.arrayFromVolume(volumeNode)
    m = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(m)
    M = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    pts = np.c_[ras_points, np.ones(len(ras_points))].T
    ijk = (M @ pts)[:3].T
    rounded = np.rint(ijk)
    if np.abs(ijk - rounded).max() > tol:
        raise AssertionError(f"points are not on the voxel grid (max off-grid {np.abs(ijk - rounded).max():.4f} voxel)")
    idx = rounded.astype(int)
    shape_ijk = arr.shape[::-1]
    if (idx < 0).any() or (idx >= np.array(shape_ijk)).any():
        raise AssertionError("points fall outside the volume")
    return arr[idx[:, 2], idx[:, 1], idx[:, 0]]


def assert_same_voxels(nodeA, nodeB):
    """Every voxel of A sits on a voxel centre of B with the same value (and the grids have equal size)."""
    rasA, valA = physical_voxel_table(nodeA)
    valB = values_at_ras(nodeB, rasA)
    if valA.size != slicer.util.arrayFromVolume(nodeB).size:
        raise AssertionError("different number of voxels")
    bad = np.count_nonzero(valA != valB)
    if bad:
        raise AssertionError(f"{bad} of {valA.size} voxels differ")


def roundtrip_labels_scenario(tmpdir, geometry="oblique", fmt=".nrrd"):
    """Self-test scenario: write a label file in the given geometry, read it back as the 'input' volume,
    import it with :func:`segments.import_labelmap_file`, check every segment voxel-exactly.
    Returns the segmentation node."""
    from LightUNETRSlicerLib import segments, volumeio

    lab = label_pattern()
    src = add_volume("labels-src", lab, geometry, labelmap=True)
    path = volumeio.export_volume(src, os.path.join(tmpdir, f"labels-{geometry}{fmt}"))
    ref = add_volume("ref", test_pattern(), geometry)
    specs = segments.label_specs_from_names(["background", "Liver", "Spleen", "Tumor"])
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    segments.import_labelmap_file(path, seg, specs, referenceVolumeNode=ref)
    for spec in specs:
        seg_id = seg.GetSegmentation().GetSegmentIdBySegmentName(spec.name)
        got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, seg_id, ref)
        expected = (lab == spec.value).astype(got.dtype)
        if not np.array_equal(got, expected):
            raise AssertionError(f"segment {spec.name}: {np.count_nonzero(got != expected)} voxels differ ({geometry})")
    return seg


def make_tiny_bundle(folder, name="tiny", labels=("background", "Liver", "Spleen", "Tumor"), in_channels=1, seed=0):
    """A real bundle of LightUNETR(patch_size=(32,32,32)) with seeded random weights, written by the
    engine's ``save_bundle`` (needs torch; imported here only). Native spacing (no resampling) keeps
    comparisons voxel-exact."""
    import torch

    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.models import LightUNETR

    torch.manual_seed(seed)
    model = LightUNETR(in_channels=in_channels, num_classes=len(labels), patch_size=(32, 32, 32))
    card = ModelCard(
        name=name,
        architecture="lightunetr",
        architecture_args={"in_channels": in_channels, "num_classes": len(labels), "patch_size": [32, 32, 32]},
        patch_size=[32, 32, 32],
        preprocessing={"target_spacing": None, "orientation": "RAS",
                       "normalization": [{"kind": "zscore"} for _ in range(in_channels)]},
        input_channels=[f"channel{i}" for i in range(in_channels)],
        labels=default_labels(list(labels)),
        description="tiny test model",
    )
    return str(save_bundle(os.path.join(str(folder), name), model, card))


def bad_inputs_scenario(logic, bundle, two_channel_bundle):
    """Bad inputs give failed jobs with messages (no exception, no process, scene untouched).
    Returns {case: message}."""
    from LightUNETRSegmentationLib import logic as logic_module

    scene = slicer.mrmlScene
    vol = add_volume("vol", test_pattern().astype(np.float32), "oblique")
    flat = add_volume("flat", test_pattern((1, 24, 28)).astype(np.float32), "axial")
    label = add_volume("lab", label_pattern(), "oblique", labelmap=True)
    cases = {
        "no volume": dict(inputVolumeNode=None, model=bundle),
        "2-D volume": dict(inputVolumeNode=flat, model=bundle),
        "label map": dict(inputVolumeNode=label, model=bundle),
        "channels": dict(inputVolumeNode=vol, model=two_channel_bundle),
        "no model": dict(inputVolumeNode=vol, model=None),
        "missing model": dict(inputVolumeNode=vol, model=os.path.join(os.path.dirname(bundle), "nope.lightunetr")),
        "device": dict(inputVolumeNode=vol, model=bundle, device="tpu"),
    }
    expected = {"no volume": "No input volume", "2-D volume": "2-D", "label map": "label map",
                "channels": "2 input channel", "no model": "No model", "missing model": "Model not found",
                "device": "Unknown device"}
    messages = {}
    for case, kwargs in cases.items():
        n = scene.GetNumberOfNodes()
        job = logic.process(waitForCompletion=True, **kwargs)
        if job.status != logic_module.FAILED or job.runner is not None:
            raise AssertionError(f"{case}: expected a failed job without a process, got {job}")
        if expected[case] not in job.message:
            raise AssertionError(f"{case}: message {job.message!r} does not mention {expected[case]!r}")
        if scene.GetNumberOfNodes() != n:
            raise AssertionError(f"{case}: the scene changed")
        messages[case] = job.message
    return messages


def end_to_end_scenario(logic, tmpdir, bundle, geometry="left-handed-oblique", timeout=600):
    """Segment a volume read from a file with ``logic.process`` and compare it voxel by voxel with
    ``lightunetr segment`` run directly on the same file. Returns the job."""
    from lightunetr_core.jobs import runner as jobrunner
    from LightUNETRSlicerLib import segments, volumeio

    src = add_volume("src", test_pattern((30, 34, 38)).astype(np.float32), geometry)
    path = volumeio.export_volume(src, os.path.join(tmpdir, f"{geometry}.nii.gz"))
    segments.remove_node(src)
    volume = volumeio.read_volume(path, name=f"input-{geometry}")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    job = logic.process(volume, seg, bundle, device="cpu", waitForCompletion=True, timeout=timeout)
    if not job.ok:
        raise AssertionError(f"segmentation failed: {job.message}\n" + "\n".join(job.log[-10:]))

    cli_out = os.path.join(tmpdir, f"cli-{geometry}.nrrd")
    runner = jobrunner.JobRunner(jobrunner.core_command("segment", path, "-m", bundle, "-o", cli_out, "--device", "cpu"),
                                 name="segment").start()
    if runner.wait(timeout=timeout) != jobrunner.COMPLETED:
        raise AssertionError(f"CLI failed: {runner.error_message}")
    cli_labels = volumeio.read_volume(cli_out, name="cli", labelmap=True)
    ras, values = physical_voxel_table(cli_labels)
    model = logic.resolveModel(bundle)
    found = 0
    for spec in model.labels:
        seg_id = seg.GetSegmentation().GetSegmentIdBySegmentName(spec.name)
        got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, seg_id, volume)
        got_at = values_at_ras_array(volume, got, ras)
        expected = values == spec.value
        found += int(expected.sum())
        if not np.array_equal(got_at > 0, expected):
            raise AssertionError(f"{geometry}: segment {spec.name}: {np.count_nonzero((got_at > 0) != expected)} voxels differ")
    if found == 0:
        raise AssertionError("the model segmented nothing; the comparison would be empty")
    segments.remove_node(cli_labels)
    return job


def file_values_at_ras(image, ras_points, tol=1e-3):
    """Values of a SimpleITK image (a file read back) at RAS points that must be its voxel centres: the
    file's own LPS geometry, independent of Slicer's reader. Raises AssertionError if a point is off its grid."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.asarray(ras_points) * np.array([-1.0, -1.0, 1.0])
    ijk = np.linalg.solve(direction @ np.diag(image.GetSpacing()), (lps - np.array(image.GetOrigin())).T).T
    rounded = np.rint(ijk)
    if np.abs(ijk - rounded).max() >= tol:
        raise AssertionError(f"points off the file's voxel grid by {np.abs(ijk - rounded).max():.4f} voxel")
    idx = rounded.astype(int)
    if (idx < 0).any() or (idx >= np.array(arr.shape[::-1])).any():
        raise AssertionError("points outside the file's image")
    return arr[idx[:, 2], idx[:, 1], idx[:, 0]]


def values_at_ras_array(volumeNode, array_kji, ras_points, tol=1e-3):
    """Like :func:`values_at_ras` for another KJI array on the grid of ``volumeNode``."""
    m = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(m)
    M = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk = (M @ np.c_[ras_points, np.ones(len(ras_points))].T)[:3].T
    r = np.rint(ijk)
    if np.abs(ijk - r).max() > tol:
        raise AssertionError("points are not on the voxel grid")
    r = r.astype(int)
    return array_kji[r[:, 2], r[:, 1], r[:, 0]]


def zipped_bundle_scenario(logic, folder):
    """"Add model..." with a zipped bundle: the card is read from inside the zip (nothing added yet) and
    shown, then the bundle is unpacked into the library, verified, and every listener is told; adding it
    again is refused. Returns the added ModelInfo. Needs torch (the bundle is made by the engine)."""
    from lightunetr_core.bundle import export_bundle_zip

    from LightUNETRSlicerLib import modelinstall
    from LightUNETRSlicerLib.models import ModelError

    source = make_tiny_bundle(os.path.join(str(folder), "zip-source"), name="zipped")
    archive = export_bundle_zip(source, os.path.join(str(folder), "zipped.zip"), overwrite=True)
    before = [m.name for m in logic.models()[0]]
    card = modelinstall.peek_card(str(archive))
    if card.get("name") != "zipped" or [m.name for m in logic.models()[0]] != before:
        raise AssertionError("reading the card of a zip must not add anything")
    text = modelinstall.describe_card(card)
    if "Segments: Liver, Spleen, Tumor" not in text or "Licence:" not in text:
        raise AssertionError(f"the card shown before adding lacks what it segments or its licence:\n{text}")
    told = []
    logic.library.add_listener(lambda: told.append(1))
    info = logic.addModelFromFile(str(archive))
    if info.name != "zipped" or "zipped" not in [m.name for m in logic.models()[0]] or not told:
        raise AssertionError("the zipped bundle was not added to the library, or the model lists were not told")
    try:
        logic.addModelFromFile(str(archive))
    except ModelError as exc:
        if "already exists" not in str(exc):
            raise
    else:
        raise AssertionError("adding the same zipped bundle twice must be refused")
    return info
