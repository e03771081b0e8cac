"""Volume export and result file import through MRML storage nodes (the path Slicer's own readers and
writers use). Never ``slicer.util.saveNode``/``loadVolume``: they need ``slicer.app``.

Geometry: a volume node is written with its own IJK-to-RAS matrix (the NRRD/NIfTI writers convert to
LPS); a parent transform is *not* applied, so results are placed back under the same transform.
"""

from __future__ import annotations

import os
import tempfile

import slicer
from lightunetr_core.atomic import atomic_path


class VolumeIOError(RuntimeError):
    """A file could not be written or read; the message names the file and the cause."""


def _scene(node=None):
    return node.GetScene() if node is not None and node.GetScene() is not None else slicer.mrmlScene


def export_volume(volumeNode, path: str, compress: bool = False) -> str:
    """Write ``volumeNode`` to ``path`` (.nrrd, .nii, .nii.gz, .mha...) atomically (temp file + rename).

    Returns the path. Raises :class:`VolumeIOError` if the writer fails.
    """
    scene = _scene(volumeNode)
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise VolumeIOError("The volume has no image data to export.")
    path = os.fspath(path)
    storage = scene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        with atomic_path(path) as tmp:  # keeps the ending (.nii.gz): the writer picks the format from it
            storage.SetFileName(str(tmp))
            storage.SetUseCompression(1 if compress else 0)
            if not storage.WriteData(volumeNode) or not tmp.is_file():
                raise VolumeIOError(f"Could not write volume '{volumeNode.GetName()}' to {path}.")
    finally:
        storage.UnRegister(None)
    return path


def read_volume(path: str, name: str | None = None, labelmap: bool = False, scene=None, center: bool = False):
    """Read an image file into a new scalar (or label map) volume node added to the scene.

    Raises :class:`VolumeIOError` (and adds nothing to the scene) if the file cannot be read.
    """
    scene = scene or slicer.mrmlScene
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VolumeIOError(f"File not found: {path}")
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.CreateNodeByClass(cls)
    storage = scene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        storage.SetFileName(path)
        storage.SetCenterImage(bool(center))
        if labelmap:
            storage.SetSingleFile(True)
        node.SetName(name or _basename_without_ext(path))
        ok = storage.ReadData(node)
        if not ok or node.GetImageData() is None:
            raise VolumeIOError(f"Could not read image file {path}.")
        scene.AddNode(node)
        if labelmap:
            node.CreateDefaultDisplayNodes()
        else:
            node.CreateDefaultDisplayNodes()
    finally:
        storage.UnRegister(None)
        node.UnRegister(None)
    return node


def _basename_without_ext(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]


def roi_ijk_box(volumeNode, roiNode):
    """Inclusive IJK box ``(lo, hi)`` of the voxels of ``volumeNode`` whose centres the ROI covers
    (axis-aligned box in IJK around the ROI corners, clipped to the volume), or None when they do not
    overlap. Both nodes are taken in world coordinates (parent transforms are linear only)."""
    import numpy as np
    import vtk

    radius = [0.0, 0.0, 0.0]
    roiNode.GetRadiusXYZ(radius)
    o2w = roiNode.GetObjectToWorldMatrix()
    O2W = np.array([[o2w.GetElement(r, c) for c in range(4)] for r in range(4)])
    corners = np.array([[sx * radius[0], sy * radius[1], sz * radius[2], 1.0]
                        for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]).T
    world = O2W @ corners
    ras_to_ijk = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(ras_to_ijk)
    M = np.array([[ras_to_ijk.GetElement(r, c) for c in range(4)] for r in range(4)])
    transform = volumeNode.GetParentTransformNode()
    if transform is not None:
        w2l = vtk.vtkMatrix4x4()
        if not transform.GetMatrixTransformFromWorld(w2l):
            raise VolumeIOError("The input volume is under a non-linear transform; harden it before using an ROI.")
        M = M @ np.array([[w2l.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk = (M @ world)[:3]
    eps = 1e-4
    lo = np.ceil(ijk.min(axis=1) - eps).astype(int)
    hi = np.floor(ijk.max(axis=1) + eps).astype(int)
    dims = np.array(volumeNode.GetImageData().GetDimensions())
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, dims - 1)
    if (hi < lo).any():
        return None
    return lo, hi


def crop_to_roi(volumeNode, roiNode, name: str | None = None):
    """Voxel-exact crop of ``volumeNode`` to a markups ROI; returns a new volume node in the scene whose
    voxels are a sub-grid of the input's (no resampling). Raises :class:`VolumeIOError` if they do not
    overlap."""
    box = roi_ijk_box(volumeNode, roiNode)
    if box is None:
        raise VolumeIOError("The ROI does not overlap the input volume; move or resize the ROI.")
    return crop_to_box(volumeNode, box, name)


def clip_box(volumeNode, box):
    """``box`` ((i0, j0, k0), (i1, j1, k1), inclusive) clipped to the volume's voxels, or None when empty."""
    import numpy as np

    dims = np.array(volumeNode.GetImageData().GetDimensions())
    lo = np.maximum(np.asarray(box[0], int), 0)
    hi = np.minimum(np.asarray(box[1], int), dims - 1)
    return None if (hi < lo).any() else (lo, hi)


def crop_to_box(volumeNode, box, name: str | None = None):
    """Voxel-exact crop of ``volumeNode`` to an inclusive IJK box; returns a new volume node in the scene
    whose voxels are a sub-grid of the input's (no resampling)."""
    import numpy as np
    import vtk

    clipped = clip_box(volumeNode, box)
    if clipped is None:
        raise VolumeIOError("The region does not overlap the input volume.")
    (i0, j0, k0), (i1, j1, k1) = clipped
    arr = slicer.util.arrayFromVolume(volumeNode)[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1].copy()
    scene = _scene(volumeNode)
    out = scene.AddNewNodeByClass(volumeNode.GetClassName(), name or f"{volumeNode.GetName()}-roi")
    M = ijk_to_ras(volumeNode)
    origin = M @ np.array([i0, j0, k0, 1.0])
    M[:3, 3] = origin[:3]
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, M[r, c])
    out.SetIJKToRASMatrix(m)
    slicer.util.updateVolumeFromArray(out, arr)
    out.SetIJKToRASMatrix(m)
    out.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    return out


def ijk_to_ras(volumeNode):
    """4x4 numpy IJK-to-RAS matrix of a volume node."""
    import numpy as np
    import vtk

    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def make_temp_dir(prefix: str = "LightUNETR-") -> str:
    """A fresh private temporary folder (``tempfile``: works in Slicer and in slicer-core)."""
    return tempfile.mkdtemp(prefix=prefix)
