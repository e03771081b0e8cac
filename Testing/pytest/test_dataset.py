"""Manifests, folder discovery, validation of bad input, the preprocessing cache and the patch sampler.

Everything uses real files written with SimpleITK and the real preprocessing code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lightunetr_core.data.cache import prepare_dataset
from lightunetr_core.data.manifest import DatasetError, discover_folder, load_manifest
from lightunetr_core.data.demo import generate_demo_dataset
from lightunetr_core.data.sampling import PatchSampler, padding_for

SMALL = (32, 28, 12)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    return generate_demo_dataset(root / "data", cases=8, labeled=3, validation=1, test=1, seed=3, shape=SMALL)


def _write(path: Path, array_xyz: np.ndarray, spacing=(1.0, 1.0, 2.5), direction=None, origin=(0.0, 0.0, 0.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array_xyz, tuple(reversed(range(array_xyz.ndim))))))
    if array_xyz.ndim == 3:
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        if direction is not None:
            image.SetDirection(tuple(np.asarray(direction, float).ravel()))
    sitk.WriteImage(image, str(path))
    return path


def _volume(seed=0, shape=(20, 18, 10)) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)


def _label(shape=(20, 18, 10), value=1) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[5:12, 4:10, 2:7] = value
    return lab


def _manifest(path: Path, cases: list[dict], labels=None, modalities=None, **extra) -> Path:
    data = {"name": "t", "modalities": modalities or ["MR"], "labels": labels or {"0": "background", "1": "organ"}, "cases": cases}
    data.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _nothing_written(cache: Path) -> bool:
    leftovers = [p for p in cache.parent.iterdir() if p.name.startswith(f".{cache.name}")]
    return not cache.exists() and not leftovers


# ---------------------------------------------------------------------------------------------
# manifest + folders


def test_manifest_parsing_roles_and_relative_paths(demo):
    spec = load_manifest(demo)
    assert spec.modalities == ["MR"] and spec.labels == {0: "background", 1: "organ"}
    roles = [c.role for c in spec.cases]
    assert roles.count("labeled") == 3 and roles.count("validation") == 1 and roles.count("test") == 1
    assert roles.count("unlabeled") == 3
    for case in spec.cases:
        assert all(p.is_absolute() or p.exists() for p in case.images)
        assert all(p.exists() for p in case.images)
        assert (case.label is None) == (case.role == "unlabeled")
    # The demo writes NIfTI and NRRD.
    exts = {"".join(p.suffixes[-2:]) if p.name.endswith(".gz") else p.suffix for c in spec.cases for p in c.images}
    assert {".nii.gz", ".nrrd"} <= exts


def test_prepare_demo_dataset(demo, tmp_path):
    ds = prepare_dataset(demo, tmp_path / "cache")
    assert len(ds.labeled) == 3 and len(ds.unlabeled) == 3 and len(ds.validation) == 1 and len(ds.test) == 1
    assert ds.num_classes == 2 and ds.in_channels == 1
    assert ds.plan.target_spacing == (1.0, 1.0, 2.5)  # median spacing of the labelled cases
    assert ds.plan.normalization[0].kind == "zscore"  # MR
    for case in ds.labeled + ds.validation:
        assert case.image.dtype == np.float32 and case.image.ndim == 4 and case.image.shape[0] == 1
        assert isinstance(case.image, np.memmap)
        assert case.label.dtype == np.uint8 and case.label.shape == case.image.shape[1:]
        assert set(np.unique(case.label)) == {0, 1}
        assert case.volume_min[0] == pytest.approx(float(case.image.min()))
        assert case.volume_max[0] == pytest.approx(float(case.image.max()))
        assert abs(float(np.asarray(case.image).mean())) < 0.05  # z-scored
        locs = case.class_locations[1]
        assert np.all(np.asarray(case.label)[tuple(locs.T)] == 1)
    for case in ds.unlabeled:
        assert case.label is None


def test_folder_discovery_multichannel_and_mha(tmp_path):
    root = tmp_path / "ds"
    for cid in ("a", "b"):
        _write(root / "imagesTr" / f"{cid}_0000.nii.gz", _volume(1))
        _write(root / "imagesTr" / f"{cid}_0001.mha", _volume(2))
        _write(root / "labelsTr" / f"{cid}.nrrd", _label(value=2 if cid == "b" else 1))
    _write(root / "imagesUnlabeled" / "u1_0000.nrrd", _volume(3))
    _write(root / "imagesUnlabeled" / "u1_0001.nrrd", _volume(4))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2}}))
    spec = discover_folder(root)
    assert [c.id for c in spec.cases] == ["a", "b", "u1"]
    assert [c.role for c in spec.cases] == ["labeled", "labeled", "unlabeled"]
    assert spec.modalities == ["T1", "CT"] and spec.labels == {0: "background", 1: "liver", 2: "tumour"}
    assert spec.cases[0].images[1].name == "a_0001.mha"
    ds = prepare_dataset(root, tmp_path / "cache")
    assert ds.in_channels == 2 and ds.labeled[0].image.shape[0] == 2
    assert [n.kind for n in ds.plan.normalization] == ["zscore", "ct"]
    assert set(ds.labeled[1].class_locations) == {1, 2} and len(ds.labeled[1].class_locations[1]) == 0


def test_folder_without_declared_labels_uses_label_values(tmp_path):
    root = tmp_path / "ds"
    _write(root / "imagesTr" / "a.nii.gz", _volume(1))
    _write(root / "labelsTr" / "a.nii.gz", _label(value=1))
    ds = prepare_dataset(root, tmp_path / "cache")
    assert ds.labels == {0: "background", 1: "class_1"}


def test_folder_missing_label_is_reported(tmp_path):
    root = tmp_path / "ds"
    _write(root / "imagesTr" / "a_0000.nii.gz", _volume(1))
    _write(root / "imagesTr" / "b_0000.nii.gz", _volume(1))
    _write(root / "labelsTr" / "a.nii.gz", _label())
    _write(root / "labelsTr" / "zz.nii.gz", _label())
    with pytest.raises(DatasetError) as err:
        discover_folder(root)
    text = str(err.value)
    assert "'b'" in text and "imagesUnlabeled" in text
    assert "zz.nii.gz" in text and "label without an image" in text


def test_default_target_spacing_is_median_in_ras_axes(tmp_path):
    cases = []
    # Stored axes permuted: index axis 0 runs along world z, so RAS spacing is (s1, s2, s0).
    perm = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)
    for i, (spacing, direction) in enumerate([((1.0, 1.0, 2.0), None), ((1.0, 1.0, 3.0), None), ((2.5, 0.8, 1.2), perm)]):
        img = _write(tmp_path / f"i{i}.nii.gz", _volume(i), spacing=spacing, direction=direction)
        lab = _write(tmp_path / f"l{i}.nii.gz", _label(), spacing=spacing, direction=direction)
        cases.append({"id": f"c{i}", "images": [img.name], "label": lab.name, "role": "labeled"})
    ds = prepare_dataset(_manifest(tmp_path / "m.json", cases, modalities=["CT"]), tmp_path / "cache")
    # RAS spacings: (1,1,2), (1,1,3), (0.8,1.2,2.5) → median (1, 1, 2.5)
    assert ds.plan.target_spacing == pytest.approx((1.0, 1.0, 2.5))
    assert ds.plan.normalization[0].kind == "ct"
    assert ds.plan.to_dict()["target_spacing"] == pytest.approx([1.0, 1.0, 2.5])


def test_manifest_preprocessing_section_and_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    img = _write(tmp_path / "i.nii.gz", _volume())
    lab = _write(tmp_path / "l.nii.gz", _label())
    data = {"name": "y", "modalities": ["MR"], "labels": {0: "background", 1: "organ"},
            "cases": [{"id": "c", "images": [img.name], "label": lab.name, "role": "labeled"}],
            "preprocessing": {"target_spacing": [2.0, 2.0, 2.5], "normalization": [{"kind": "minmax"}]}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    ds = prepare_dataset(tmp_path / "m.yaml", tmp_path / "cache")
    assert ds.plan.target_spacing == (2.0, 2.0, 2.5) and ds.plan.normalization[0].kind == "minmax"
    assert ds.labeled[0].image.shape == (1, 10, 9, 10)
    assert float(ds.labeled[0].image.min()) == pytest.approx(0.0) and float(ds.labeled[0].image.max()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# cache


def test_cache_is_reused_and_invalidated_by_mtime(demo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo.parent, data)
    cache = tmp_path / "cache"
    first = prepare_dataset(data / "dataset.json", cache)
    assert first.stats == {"preprocessed": 7, "cached": 0, "empty_labels": 0, "warnings": []}
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 7 and not any(p.name.startswith(".") for p in cache.rglob("*"))
    second = prepare_dataset(data / "dataset.json", cache)
    assert second.stats == {"preprocessed": 0, "cached": 7, "empty_labels": 0, "warnings": []}
    np.testing.assert_array_equal(np.asarray(first.labeled[0].image), np.asarray(second.labeled[0].image))
    # Touch one source file: only that case is redone.
    target = data / load_manifest(data / "dataset.json").by_role("labeled")[0].images[0].relative_to(data)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = prepare_dataset(data / "dataset.json", cache)
    assert third.stats == {"preprocessed": 1, "cached": 6, "empty_labels": 0, "warnings": []}
    # A different plan is a different key.
    from lightunetr_core.data.preprocessing import PreprocessingPlan

    fourth = prepare_dataset(data / "dataset.json", cache, plan=PreprocessingPlan(target_spacing=(2.0, 2.0, 2.5)))
    assert fourth.stats["preprocessed"] == 7 and fourth.labeled[0].image.shape[1] == SMALL[0] // 2


def test_a_case_cached_as_unlabelled_is_prepared_again_as_a_labelled_one(tmp_path):
    """A benchmark keeps an unlabelled case's label aside, then trains an upper bound in which that case is
    labelled, with the same cache: the unlabelled entry (which holds no label) must not be reused for it."""
    img = _write(tmp_path / "src" / "a.nii.gz", _volume(1))
    lab = _write(tmp_path / "src" / "a_label.nii.gz", _label())
    img2 = _write(tmp_path / "src" / "b.nii.gz", _volume(2))
    lab2 = _write(tmp_path / "src" / "b_label.nii.gz", _label())
    cache = tmp_path / "cache"
    aside = _manifest(tmp_path / "aside.json", [_case("a", img, lab), _case("b", img2, lab2, role="unlabeled")])
    first = prepare_dataset(aside, cache)
    assert first.unlabeled[0].label is None
    everything = _manifest(tmp_path / "all.json", [_case("a", img, lab), _case("b", img2, lab2)])
    second = prepare_dataset(everything, cache)
    assert second.stats["cached"] == 1 and second.stats["preprocessed"] == 1
    assert [c.id for c in second.labeled] == ["a", "b"] and second.labeled[1].label is not None
    np.testing.assert_array_equal(np.asarray(second.labeled[1].label), np.asarray(second.labeled[0].label))


# ---------------------------------------------------------------------------------------------
# bad input: one message per problem, all listed, nothing written


@pytest.fixture
def good(tmp_path):
    img = _write(tmp_path / "src" / "good.nii.gz", _volume())
    lab = _write(tmp_path / "src" / "good_label.nii.gz", _label())
    return img, lab


def _case(cid, img, lab, role="labeled", root=None):
    rel = (lambda p: os.path.relpath(p, root)) if root else (lambda p: str(p))
    return {"id": cid, "images": [rel(img)], "label": rel(lab) if lab else None, "role": role}


def _expect_error(tmp_path, manifest, *fragments, **kwargs):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError) as err:
        prepare_dataset(manifest, cache, **kwargs)
    text = str(err.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert "nothing was written" in text
    assert _nothing_written(cache)
    assert isinstance(err.value, ValueError)
    return err.value


def test_missing_file(tmp_path, good):
    img, lab = good
    m = _manifest(tmp_path / "m.json", [_case("ok", img, lab), _case("gone", tmp_path / "nope.nii.gz", lab)])
    _expect_error(tmp_path, m, "case 'gone'", "nope.nii.gz", "file not found", "Check the path")


def test_unreadable_image(tmp_path, good):
    img, lab = good
    bad = tmp_path / "src" / "broken.nii.gz"
    bad.write_bytes(b"this is not an image" * 10)
    m = _manifest(tmp_path / "m.json", [_case("ok", img, lab), _case("broken", bad, None, role="unlabeled")])
    _expect_error(tmp_path, m, "case 'broken'", "cannot read the image", "Supported")


def test_2d_and_4d_images(tmp_path, good):
    img, lab = good
    flat = _write(tmp_path / "src" / "flat.nii.gz", np.zeros((20, 18), np.float32))
    four = tmp_path / "src" / "four.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(_volume(k).transpose(2, 1, 0)) for k in range(3)]), str(four))
    m = _manifest(tmp_path / "m.json", [_case("ok", img, lab), _case("flat", flat, None, "unlabeled"), _case("four", four, None, "unlabeled")])
    _expect_error(tmp_path, m, "case 'flat'", "2-D image", "case 'four'", "4-D image")


def test_nan_voxels(tmp_path, good):
    img, lab = good
    vol = _volume()
    vol[3, 3, 3] = np.nan
    # NRRD: SimpleITK's NIfTI reader turns non-finite voxels into 0, NRRD keeps them.
    nan = _write(tmp_path / "src" / "nan.nrrd", vol)
    m = _manifest(tmp_path / "m.json", [_case("ok", img, lab), _case("nan", nan, lab)])
    _expect_error(tmp_path, m, "case 'nan'", "NaN", "Replace them")
    # "ok" is preprocessed into a staging folder before "nan" fails: with a cache folder whose parents
    # do not exist yet, those parents are removed again too.
    with pytest.raises(DatasetError):
        prepare_dataset(m, tmp_path / "deep" / "er" / "cache")
    assert not (tmp_path / "deep").exists()


def test_label_values_outside_declared_classes(tmp_path, good):
    img, lab = good
    bad = _label()
    bad[0, 0, 0] = 7
    badlab = _write(tmp_path / "src" / "badlab.nii.gz", bad)
    m = _manifest(tmp_path / "m.json", [_case("ok", img, lab), _case("seven", img, badlab)])
    _expect_error(tmp_path, m, "case 'seven'", "[7]", "not declared", "remap")


def test_label_geometry_mismatch(tmp_path, good):
    img, lab = good
    shifted = _write(tmp_path / "src" / "shifted.nii.gz", _label(), origin=(5.0, 0.0, 0.0))
    small = _write(tmp_path / "src" / "small.nii.gz", _label(shape=(10, 18, 10)))
    m = _manifest(tmp_path / "m.json", [_case("ok", img, lab), _case("shifted", img, shifted), _case("small", img, small, "validation")])
    _expect_error(tmp_path, m, "case 'shifted'", "case 'small'", "does not lie on the image grid", "resample the label")


def test_no_labelled_case(tmp_path, good):
    img, _ = good
    m = _manifest(tmp_path / "m.json", [_case("u", img, None, "unlabeled")])
    _expect_error(tmp_path, m, "no labelled case", '"labeled"')


def test_fewer_cases_than_the_batch(tmp_path, good):
    img, lab = good
    m = _manifest(tmp_path / "m.json", [_case("a", img, lab), _case("u", img, None, "unlabeled")])
    _expect_error(tmp_path, m, "1 labelled case(s) but the batch needs 2", "1 unlabelled case(s) but the batch needs 2",
                  labeled_batch_size=2, unlabeled_batch_size=2)
    _expect_error(tmp_path, _manifest(tmp_path / "m2.json", [_case("a", img, lab)]), "no unlabelled case", require_unlabeled=True)


def test_all_problems_are_listed_together(tmp_path, good):
    img, lab = good
    vol = _volume()
    vol[0, 0, 0] = np.inf
    inf = _write(tmp_path / "src" / "inf.mha", vol)
    bad = _label()
    bad[1, 1, 1] = 3
    badlab = _write(tmp_path / "src" / "badlab.nii.gz", bad)
    cases = [
        _case("ok", img, lab),
        _case("missing", tmp_path / "missing.nii.gz", None, "unlabeled"),
        _case("inf", inf, None, "unlabeled"),
        _case("three", img, badlab),
        {"id": "nolabel", "images": [str(img)], "label": None, "role": "validation"},
    ]
    # Structural problems are reported by the manifest parser first ...
    err = _expect_error(tmp_path, _manifest(tmp_path / "m.json", cases), "case 'nolabel'", "needs a label")
    # ... content problems of every case together once the structure is fine.
    err = _expect_error(tmp_path, _manifest(tmp_path / "m2.json", cases[:4]), "case 'missing'", "case 'inf'", "case 'three'")
    assert len(err.problems) == 3


def test_manifest_structure_problems(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        prepare_dataset(tmp_path / "bad.json", tmp_path / "cache")
    m = _manifest(tmp_path / "m.json", [{"id": "a", "images": ["x.nii.gz", "y.nii.gz"], "label": None, "role": "student"}],
                  labels={"1": "organ", "x": "?"})
    err = _expect_error(tmp_path, m, "background", "role 'student'", "2 image(s) but 1 modalities", "'x' is not an integer")
    assert len(err.problems) >= 4
    with pytest.raises(DatasetError, match="no such manifest"):
        prepare_dataset(tmp_path / "absent", tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# sampler


@pytest.fixture(scope="module")
def prepared(demo, tmp_path_factory):
    return prepare_dataset(demo, tmp_path_factory.mktemp("cache") / "c")


def test_sampler_shapes_and_padding(prepared):
    patch = (48, 16, 8)  # x larger than the volume (32) → padded; y, z crops
    sampler = PatchSampler(prepared, patch, torch.Generator().manual_seed(0), foreground_oversample=0.0)
    batch = sampler.sample_labeled(6)
    assert batch["image"].shape == (6, 1, *patch) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (6, *patch) and batch["label"].dtype == torch.int64
    assert batch["volume_min"].shape == (6, 1) and batch["volume_max"].dtype == torch.float32
    assert batch["case_index"].shape == (6,) and batch["case_index"].dtype == torch.int64
    pad = int(padding_for(prepared.labeled[0].shape, patch)[0])
    assert pad == (48 - 32) // 2 + 1 == 9
    for i in range(6):
        case = prepared.labeled[int(batch["case_index"][i])]
        x0, y0, z0 = (int(v) for v in batch["crop_start"][i])
        assert -pad <= x0 <= 32 + pad - 48 and 0 <= y0 <= 28 - 16 and 0 <= z0 <= 12 - 8
        # Crop content equals the volume where it overlaps, zero elsewhere.
        img = batch["image"][i, 0].numpy()
        inside = slice(-x0, -x0 + 32)
        np.testing.assert_array_equal(img[inside], np.asarray(case.image[0, :, y0:y0 + 16, z0:z0 + 8]))
        assert np.all(img[: -x0] == 0) and np.all(img[-x0 + 32:] == 0)
        valid = batch["valid"][i].numpy()
        assert valid[inside].all() and not valid[: -x0].any() and not valid[-x0 + 32:].any()
        np.testing.assert_array_equal(batch["label"][i].numpy()[inside], np.asarray(case.label[:, y0:y0 + 16, z0:z0 + 8]))
        assert batch["volume_min"][i, 0] == pytest.approx(float(case.volume_min[0]))
    # Shuffled epochs: the first three labelled samples cover all three cases.
    assert sorted(batch["case_index"][:3].tolist()) == [0, 1, 2]
    unl = sampler.sample_unlabeled(4)
    assert unl["image"].shape == (4, 1, *patch) and "label" not in unl
    centre = sampler.sample_unlabeled(2, center_crop=True)
    shape = np.asarray(prepared.unlabeled[int(centre["case_index"][0])].shape)
    pads = padding_for(shape, patch)
    expected = np.round((shape + 2 * pads - np.asarray(patch)) / 2.0).astype(int) - pads
    assert centre["crop_start"][0].tolist() == expected.tolist()


def test_sampler_foreground_oversampling_rate(prepared):
    patch = (16, 16, 8)  # small patches: random crops often miss the organ
    n = 600
    rates = {}
    for p in (0.0, 0.5, 1.0):
        sampler = PatchSampler(prepared, patch, torch.Generator().manual_seed(1), foreground_oversample=p)
        batch = sampler.sample_labeled(n)
        forced = batch["foreground"]
        has_fg = (batch["label"].flatten(1) > 0).any(1)
        centre = batch["label"][:, 8, 8, 4]
        rates[p] = (forced.float().mean().item(), (centre > 0).float().mean().item())
        # Every forced crop is centred on a foreground voxel (the centre is clamped only at borders).
        assert bool(has_fg[forced].all())
        if p == 1.0:
            assert (centre > 0).float().mean().item() > 0.8
    assert rates[0.0][0] == 0.0 and rates[1.0][0] == 1.0
    assert abs(rates[0.5][0] - 0.5) < 0.07  # binomial sd ≈ 0.02
    assert rates[0.0][1] < rates[0.5][1] < rates[1.0][1]


def test_sampler_is_deterministic_with_seed(prepared):
    def draw(seed):
        s = PatchSampler(prepared, (16, 16, 8), torch.Generator().manual_seed(seed))
        a, b = s.sample_labeled(5), s.sample_unlabeled(3)
        return torch.cat([a["image"].flatten(), b["image"].flatten()]), a["case_index"], a["crop_start"]

    x, y = draw(7), draw(7)
    for u, v in zip(x, y):
        assert torch.equal(u, v)
    z = draw(8)
    assert not torch.equal(x[0], z[0])


def test_sampler_rejects_bad_arguments(prepared):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="patch_size"):
        PatchSampler(prepared, (16, 16), g)
    with pytest.raises(ValueError, match="foreground_oversample"):
        PatchSampler(prepared, (16, 16, 8), g, foreground_oversample=1.5)

    class Empty:
        labeled = prepared.labeled
        unlabeled = []

    with pytest.raises(ValueError, match="no unlabelled cases"):
        PatchSampler(Empty(), (16, 16, 8), g).sample_unlabeled(1)


def _write_dicom_series(folder: Path, array_xyz: np.ndarray, spacing=(1.0, 1.0, 2.5)) -> None:
    folder.mkdir(parents=True)
    volume = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)).astype(np.int16))
    volume.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.4242"
    for k in range(volume.GetDepth()):
        slice_k = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR", "0020|000e": series, "0020|000d": series + ".0", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
            "0008|0018": f"{series}.{k + 1}",
        }.items():
            slice_k.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_k)


def test_folder_with_dicom_series_case(tmp_path):
    root = tmp_path / "ds"
    vol = np.rint(_volume(5)).astype(np.int16)
    _write_dicom_series(root / "imagesTr" / "dcm_0000", vol)
    _write(root / "labelsTr" / "dcm.nii.gz", _label())
    spec = discover_folder(root)
    assert [c.id for c in spec.cases] == ["dcm"] and spec.cases[0].images[0].is_dir()
    ds = prepare_dataset(root, tmp_path / "cache")
    assert ds.labeled[0].image.shape == (1, 20, 18, 10)
    # DICOM stores LPS with identity orientation here; RAS reorientation flips x and y.
    expected = (vol[::-1, ::-1, :] - vol.mean()) / vol.std()
    np.testing.assert_allclose(np.asarray(ds.labeled[0].image[0]), expected, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ds.labeled[0].label), _label()[::-1, ::-1, :])
    assert prepare_dataset(root, tmp_path / "cache").stats == {"preprocessed": 0, "cached": 1, "empty_labels": 0, "warnings": []}


# ------------------------------------------------------------------ Decathlon / MONAI datalists
def _datalist_folder(root: Path, folds: bool = False) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTs").mkdir()
    training = []
    for n in range(4):
        img = sitk.GetImageFromArray(np.random.default_rng(n).normal(size=(20, 22, 24)).astype(np.float32))
        lab = sitk.GetImageFromArray((np.arange(20 * 22 * 24).reshape(20, 22, 24) % 7 == 0).astype(np.uint8))
        sitk.WriteImage(img, str(root / "imagesTr" / f"la_{n:03d}.nii.gz"))
        entry = {"image": f"./imagesTr/la_{n:03d}.nii.gz"}
        if n < 3:
            sitk.WriteImage(lab, str(root / "labelsTr" / f"la_{n:03d}.nii.gz"))
            entry["label"] = f"./labelsTr/la_{n:03d}.nii.gz"
        if folds:
            entry["fold"] = n % 2
        training.append(entry)
    sitk.WriteImage(img, str(root / "imagesTs" / "la_100.nii.gz"))
    manifest = {"name": "Task02_Heart", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "left atrium"},
                "numTraining": 4, "training": training, "test": ["./imagesTs/la_100.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_decathlon_datalist_through_monai(tmp_path):
    from lightunetr_core.data.manifest import load_dataset_spec

    root = _datalist_folder(tmp_path / "Task02_Heart")
    for source in (root, root / "dataset.json"):  # the folder or the file
        spec = load_dataset_spec(source)
        assert spec.name == "Task02_Heart" and spec.modalities == ["MRI"] and spec.labels == {0: "background", 1: "left atrium"}
        roles = {c.id: c.role for c in spec.cases}
        assert roles == {"la_000": "labeled", "la_001": "labeled", "la_002": "labeled", "la_003": "unlabeled",
                         "la_100": "test"}
        first = next(c for c in spec.cases if c.id == "la_000")
        assert first.images == [root / "imagesTr" / "la_000.nii.gz"] and first.label == root / "labelsTr" / "la_000.nii.gz"
    prepared = prepare_dataset(root, tmp_path / "cache", labeled_batch_size=2, unlabeled_batch_size=1)
    assert [c.id for c in prepared.labeled] == ["la_000", "la_001", "la_002"] and len(prepared.unlabeled) == 1


def test_datalist_folds_choose_the_validation_cases(tmp_path):
    from lightunetr_core.data.manifest import DatasetError, load_dataset_spec

    root = _datalist_folder(tmp_path / "Task", folds=True)
    spec = load_dataset_spec(root, fold=0)
    assert {c.id: c.role for c in spec.cases if c.role in ("labeled", "validation")} == {
        "la_000": "validation", "la_001": "labeled", "la_002": "validation"}
    with pytest.raises(DatasetError, match="fold 5"):
        load_dataset_spec(root / "dataset.json", fold=5)
    plain = _datalist_folder(tmp_path / "Plain")
    with pytest.raises(DatasetError, match='no "fold" field'):
        load_dataset_spec(plain, fold=0)
