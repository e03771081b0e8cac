"""Independent (SimpleITK, LPS) side of the geometry tests: write files and list voxel positions."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from LightUNETRScenarios.segmentation import GEOMETRIES
from LightUNETRScenarios.segmentation import file_values_at_ras as values_at_ras  # noqa: F401 (tests import it from here)

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def sitk_image(array_kji, geometry):
    """SimpleITK image holding ``array_kji`` (SimpleITK's array order is also z,y,x = K,J,I) with a
    geometry of :data:`GEOMETRIES` (given in RAS, converted here to LPS)."""
    spacing, direction_ras, origin_ras = GEOMETRIES[geometry]
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (LPS_FROM_RAS @ np.asarray(direction_ras)).ravel()])
    img.SetOrigin([float(v) for v in LPS_FROM_RAS @ np.asarray(origin_ras)])
    return img


def voxel_table_ras(img):
    """(N,3) RAS voxel centres and (N,) values of a SimpleITK image."""
    arr = sitk.GetArrayFromImage(img)
    D = np.array(img.GetDirection()).reshape(3, 3)
    S = np.diag(img.GetSpacing())
    O = np.array(img.GetOrigin())
    k, j, i = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=0)
    lps = (D @ S @ ijk).T + O
    return lps @ LPS_FROM_RAS.T, arr.ravel()


def is_right_handed(img) -> bool:
    return np.linalg.det(np.array(img.GetDirection()).reshape(3, 3)) > 0
