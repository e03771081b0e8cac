"""End-to-end: LightUNETRSegmentation logic with the REAL engine subprocess (lightunetr segment) and a
tiny real bundle: voxel-exact agreement with the CLI on the same file (oblique, anisotropic,
left-handed), uncertainty map + ROI, cancel without leftovers, failures that leave the scene untouched,
bad inputs as messages, and a queue of volumes."""

import os
import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from lightunetr_core.jobs import runner as jobrunner
from LightUNETRSlicerLib import segments, volumeio
from LightUNETRSegmentationLib import logic as logic_module
from LightUNETRScenarios import segmentation as scenarios
from LightUNETRSegmentationLib.logic import SegmentationLogic
from sitk_helpers import sitk_image, values_at_ras

TIMEOUT = 300


@pytest.fixture
def logic(tmp_path):
    lg = SegmentationLogic(modelsFolder=str(tmp_path / "models"))
    lg.extraEnvironment = {"OMP_NUM_THREADS": "1"}
    yield lg
    lg.shutdown()


def _node_ids(scene):
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


@pytest.mark.slow
def test_matches_cli_on_same_file(scene, tmp_path, logic, tiny_bundle):
    """For each geometry: a file written by SimpleITK is loaded into Slicer; the module logic's queue
    segments the volumes one after another (export → subprocess → import each); the CLI segments the
    original files directly (one process for all). Every segment equals the CLI's label map at every
    voxel position."""
    geoms = ["anisotropic", "oblique", "left-handed"]
    files = []
    for g in geoms:
        path = str(tmp_path / f"{g}.nii.gz")
        sitk.WriteImage(sitk_image(scenarios.test_pattern((30, 34, 38), seed=3).astype(np.float32), g), path)
        files.append(path)
    cli_dir = tmp_path / "cli"
    r = jobrunner.JobRunner(jobrunner.core_command("segment", *files, "-m", tiny_bundle, "-o", str(cli_dir),
                                                   "--format", "nrrd", "--device", "cpu"),
                            env=jobrunner.job_environment({"OMP_NUM_THREADS": "1"})).start()
    assert r.wait(timeout=TIMEOUT) == jobrunner.COMPLETED, r.error_message
    model = logic.resolveModel(tiny_bundle)
    volumes = [volumeio.read_volume(path) for path in files]
    queue = logic.processQueue(volumes, tiny_bundle, device="cpu")
    jobs = queue.wait(timeout=len(files) * TIMEOUT)
    assert queue.progress == 1.0 and len(jobs) == len(files)
    for g, volume, job in zip(geoms, volumes, jobs):
        assert job.ok, job.message + "\n".join(job.log[-10:])
        seg = job.segmentationNode
        cli = sitk.ReadImage(str(cli_dir / f"{g}_segmentation.nrrd"))
        ras, _ = scenarios.physical_voxel_table(volume)
        expected = values_at_ras(cli, ras).reshape(slicer.util.arrayFromVolume(volume).shape)
        assert len(np.unique(expected)) >= 2, "the tiny model must segment something for the test to mean anything"
        for spec in model.labels:
            sid = seg.GetSegmentation().GetSegmentIdBySegmentName(spec.name)
            got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, volume)
            np.testing.assert_array_equal(got > 0, expected == spec.value, err_msg=f"{g}: {spec.name}")
        # names, colours, terminology from the card
        first = seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetSegmentIdBySegmentName("Liver"))
        assert first.GetColor() == pytest.approx(tuple(model.card["labels"][1]["color"]))
        assert "Liver" in segments.get_terminology(first)
        assert seg.GetName() == f"{volume.GetName()} segmentation"


@pytest.mark.slow
def test_shared_end_to_end_scenario(scene, tmp_path, logic, tiny_bundle):
    """The scenario the Slicer self-test runs (left-handed and oblique at once)."""
    job = scenarios.end_to_end_scenario(logic, str(tmp_path), tiny_bundle, "left-handed-oblique", timeout=TIMEOUT)
    assert job.progress == 1.0 and job.runner.events[0]["event"] == "started"
    assert any(e["event"] == "progress" for e in job.runner.events)


@pytest.mark.slow
def test_roi_and_uncertainty(scene, tmp_path, logic, tiny_bundle):
    volume = scenarios.add_volume("vol", scenarios.test_pattern((30, 34, 38), seed=5).astype(np.float32), "oblique")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "P"), "S")
    sh.SetItemParent(segments.ensure_sh_item(volume)[1], study)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    center = volumeio.ijk_to_ras(volume) @ np.array([20, 16, 14, 1.0])
    roi.SetCenter(*center[:3])
    roi.SetSize(20, 20, 20)
    box = volumeio.roi_ijk_box(volume, roi)
    progress_seen = []
    job = logic.process(volume, None, tiny_bundle, device="cpu", roiNode=roi, uncertainty=True, timeout=TIMEOUT,
                        on_progress=lambda j: progress_seen.append(j.progress))
    assert job.ok, job.message
    assert progress_seen and all(0.0 <= p <= 1.0 for p in progress_seen)
    seg = job.segmentationNode
    (i0, j0, k0), (i1, j1, k1) = box
    inside = np.zeros(slicer.util.arrayFromVolume(volume).shape, bool)
    inside[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = True
    union = np.zeros(inside.shape, bool)
    for sid in job.segmentIds:
        union |= slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, volume) > 0
    assert union.any() and not (union & ~inside).any(), "segments outside the ROI"
    unc = job.uncertaintyNode
    assert unc is not None and unc.GetName() == "vol uncertainty"
    values = slicer.util.arrayFromVolume(unc)
    assert values.shape == (k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-6
    # the uncertainty grid is the cropped sub-grid of the input
    ras, _ = scenarios.physical_voxel_table(unc)
    scenarios.values_at_ras(volume, ras)
    assert sh.GetItemParent(sh.GetItemByDataNode(unc)) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study
    assert not slicer.util.getNodes("__LightUNETR*")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_cancel_leaves_no_process_and_no_change(scene, tmp_path, logic, tiny_bundle):
    volume = scenarios.add_volume("big", scenarios.test_pattern((64, 64, 64), seed=1).astype(np.float32), "oblique")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    before = _node_ids(scene)
    job = logic.processAsync(volume, seg, tiny_bundle, device="cpu", overlap=0.9)
    assert job.status == logic_module.RUNNING
    deadline = time.time() + TIMEOUT
    while job.poll() and not any(e["event"] == "progress" for e in job.runner.events):
        assert time.time() < deadline
        time.sleep(0.05)
    assert not job.done, "the job finished before it could be cancelled; make the test volume larger"
    pid = job.runner.process.pid
    children = jobrunner.descendant_pids(pid)
    workdir = job.workdir
    job.cancel()
    assert job.wait(timeout=TIMEOUT) == logic_module.CANCELLED
    assert "cancelled" in job.message.lower()
    for p in [pid, *children]:
        end = time.time() + 10
        while _alive(p) and time.time() < end:
            time.sleep(0.05)
        assert not _alive(p), f"process {p} left behind"
    assert _node_ids(scene) == before
    assert seg.GetSegmentation().GetNumberOfSegments() == 0
    assert not os.path.exists(workdir), "temporary folder left behind"


@pytest.mark.slow
def test_shutdown_kills_jobs_and_removes_patient_copies(scene, tmp_path, tiny_bundle):
    """Module cleanup / application exit: the running job's process tree is killed and the uncompressed
    copy of the patient's volume in the temporary folder is removed, with nothing left to poll."""
    from LightUNETRSegmentationLib.logic import SegmentationLogic

    logic = SegmentationLogic(modelsFolder=str(tmp_path / "models"))
    logic.extraEnvironment = {"OMP_NUM_THREADS": "1"}
    volume = scenarios.add_volume("big", scenarios.test_pattern((64, 64, 64), seed=2).astype(np.float32), "oblique")
    job = logic.processAsync(volume, None, tiny_bundle, device="cpu", overlap=0.9)
    workdir, own = job.workdir, job.runner._own_dir
    assert os.path.isfile(os.path.join(workdir, "input0.nrrd")), "the job works on an exported copy"
    pid = job.runner.process.pid
    deadline = time.time() + TIMEOUT
    while not job.runner.stage and time.time() < deadline:  # the engine reported its first stage: it runs
        job.poll()
        time.sleep(0.05)
    assert not job.done, job.message
    children = jobrunner.descendant_pids(pid)  # PythonSlicer's interpreter child, in Slicer; none here
    logic.shutdown()
    assert not os.path.exists(workdir) and not os.path.exists(own), "temporary copies left behind"
    assert job.done and job.status == logic_module.CANCELLED and not logic.activeJobs
    for p in [pid, *children]:
        end = time.time() + 10
        while _alive(p) and time.time() < end:
            time.sleep(0.05)
        assert not _alive(p), f"process {p} left behind"


@pytest.mark.slow
def test_engine_failure_leaves_scene_untouched(scene, tmp_path, logic, tiny_bundle):
    broken = shutil.copytree(tiny_bundle, tmp_path / "broken.lightunetr")
    with open(broken / "model.safetensors", "r+b") as f:  # corrupt the weights: SHA-256 check fails
        f.seek(-8, os.SEEK_END)
        f.write(b"\0" * 8)
    volume = scenarios.add_volume("vol", scenarios.test_pattern().astype(np.float32), "oblique")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    seg.GetSegmentation().AddEmptySegment("keep", "Keep")
    before = _node_ids(scene)
    job = logic.process(volume, seg, str(broken), device="cpu", timeout=TIMEOUT)
    assert job.status == logic_module.FAILED
    assert "SHA-256" in job.message or "sha" in job.message.lower(), job.message
    assert _node_ids(scene) == before
    assert seg.GetSegmentation().GetNumberOfSegments() == 1


def test_bad_inputs_give_messages(scene, logic, tiny_bundle, two_channel_bundle):
    messages = scenarios.bad_inputs_scenario(logic, tiny_bundle, two_channel_bundle)
    assert "needs 2 input channel(s)" in messages["channels"]


def test_two_channel_model_with_two_volumes(scene, logic, two_channel_bundle):
    a = scenarios.add_volume("t1", scenarios.test_pattern(seed=1).astype(np.float32), "anisotropic")
    b = scenarios.add_volume("t2", scenarios.test_pattern(seed=2).astype(np.float32), "oblique")
    job = logic.process([a, b], None, two_channel_bundle, device="cpu")
    assert job.status == logic_module.FAILED and "same voxel grid" in job.message


def test_model_library(tmp_path, tiny_bundle):
    from LightUNETRSlicerLib.models import ModelError, ModelLibrary

    lib = ModelLibrary(str(tmp_path / "lib"))
    assert lib.discover() == ([], [])
    info = lib.add(tiny_bundle)
    assert info.name == "tiny" and info.num_channels == 1 and info.label_names == ["Liver", "Spleen", "Tumor"]
    (tmp_path / "lib" / "junk.lightunetr").mkdir()
    models, problems = lib.discover()
    assert [m.name for m in models] == ["tiny"] and "not a LightUNETR model bundle" in problems[0]
    assert lib.find("tiny").path == info.path
    with pytest.raises(ModelError, match="already installed"):
        lib.add(tiny_bundle)
    with pytest.raises(ModelError, match="No model named"):
        lib.find("other")
    ckpt = tmp_path / "x.pth"
    ckpt.write_bytes(b"\x80")
    with pytest.raises(ModelError, match="checkpoint"):
        lib.add(str(ckpt))
