"""LightUNETRTraining against a REAL slicer-core scene: case table, export read back with SimpleITK in
physical space (anisotropic, oblique, left-handed), invalid setups reported per case without starting a
process, live plot nodes, and a real short training run in a subprocess (stop with checkpoint, resume,
bundle registered in the segmentation module's library, unlabelled cases segmented and ranked by
uncertainty), plus stopping on scene close."""

import os
import time

import numpy as np
import pytest

from lightunetr_core.jobs import runner as jobrunner
from LightUNETRSegmentationLib.logic import SegmentationLogic
from LightUNETRScenarios import training as scenarios
from LightUNETRTrainingLib.cases import CaseTable
from LightUNETRTrainingLib.config import TrainingConfig
from LightUNETRTrainingLib.logic import TrainingLogic
from LightUNETRTrainingLib.plot import TrainingPlot

TIMEOUT = 400
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def seg_logic(tmp_path):
    lg = SegmentationLogic(modelsFolder=str(tmp_path / "models"))
    lg.extraEnvironment = dict(ENV)
    yield lg
    lg.shutdown()


@pytest.fixture
def logic(scene, tmp_path, seg_logic):
    lg = TrainingLogic(segmentationLogic=seg_logic, jobsFolder=str(tmp_path / "jobs"), scene=scene)
    lg.extraEnvironment = dict(ENV)
    lg.stopGraceSeconds = 60
    yield lg
    lg.shutdown()


def tiny_config(**kw):
    base = dict(name="Tiny", recipe="cse-reference", iterations=3, patch_size=(32, 32, 32), batch_labeled=2,
                batch_unlabeled=2, val_every=0, device="cpu", threads=1, inference_device="cpu",
                target_spacing=(0.7, 0.9, 2.5))
    base.update(kw)
    return TrainingConfig(**base)


def test_case_table_from_scene(scene):
    table = scenarios.case_table_scenario()
    ids = [r.case_id for r in table.rows]
    assert len(set(ids)) == len(ids)
    table.set_role("unlabeledD", "ignore")
    assert not table.check(TrainingConfig(batch_unlabeled=2))  # one unlabelled case left for a batch of 2
    assert "1 unlabelled case(s)" in table.report()
    table.set_role("caseB", "validation")
    assert table.check(TrainingConfig(batch_labeled=1, batch_unlabeled=1)), table.report()
    with pytest.raises(ValueError):
        table.set_role("caseA", "train")


def test_export_matches_scene_voxel_exactly(scene, tmp_path):
    result = scenarios.export_check_scenario(str(tmp_path / "job"))
    assert os.path.isfile(result.manifest)
    assert not [p for p in os.listdir(tmp_path / "job") if p.startswith(".")], "temporary folder left behind"
    # the engine accepts the manifest as it is
    from lightunetr_core.data.manifest import load_manifest

    spec = load_manifest(result.manifest)
    assert [c.role for c in spec.cases] == ["labeled", "labeled", "unlabeled"]
    assert spec.labels == {0: "background", 1: "Organ", 2: "Tumor"}


def test_export_refuses_existing_data_folder(scene, tmp_path):
    from LightUNETRTrainingLib.export import ExportError, export_cases

    cases = scenarios.training_scene(n_labeled=1, n_unlabeled=1, shape_kji=(12, 12, 12))
    table = CaseTable.from_nodes([c[:2] for c in cases["labeled"]], cases["unlabeled"])
    cfg = TrainingConfig(batch_labeled=1, batch_unlabeled=1)
    export_cases(table, str(tmp_path), cfg)
    with pytest.raises(ExportError, match="already exists"):
        export_cases(table, str(tmp_path), cfg)


def test_invalid_setups_reported_per_case(scene, tmp_path, logic):
    reports = scenarios.invalid_setups_scenario(logic, str(tmp_path / "jobs"))
    assert set(reports) >= {"no labeled case", "mismatched classes", "other grid"}
    assert "renamedB" in reports["mismatched classes"]


def test_config_problems_and_args(tmp_path):
    assert TrainingConfig(patch_size=(30, 32, 32)).problems()
    assert TrainingConfig(recipe="magic").problems()
    assert not TrainingConfig().problems()
    args = tiny_config().train_args("m.json", "run", resume=True)
    i = args.index("--patch-size")
    assert args[i + 1:i + 4] == ["32", "32", "32"] and args[-1] == "--resume"
    with pytest.raises(ValueError, match="Unknown training option"):
        TrainingConfig.from_dict({"iters": 3})
    # the CLI accepts every argument we build
    from lightunetr_core.cli import train as train_cli
    import argparse

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    ns = parser.parse_args(["train", *tiny_config(lr=0.01, init_bundle="x").train_args("m.json", "run")])
    assert ns.iterations == 3 and train_cli.parse_patch_size(ns.patch_size) == ((32, 32, 32), False) and ns.name == "Tiny"


def test_plot_nodes_update(scene):
    plot = TrainingPlot(scene, "T")
    plot.add_progress(1, {"total": 2.0, "ce": 0.5})
    plot.add_progress(2, {"total": 1.5, "ce": 0.4, "smc": 0.1})
    plot.add_validation(2, 0.25)
    assert plot.column(plot.lossTable, "total") == [2.0, 1.5]
    smc = plot.column(plot.lossTable, "smc")
    assert np.isnan(smc[0]) and smc[1] == pytest.approx(0.1)
    assert plot.column(plot.diceTable, "dice") == [0.25]
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 4  # dice, total, ce, smc
    assert {plot.chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(4)} == {"dice", "total", "ce", "smc"}
    scene.Clear(0)
    plot.add_progress(3, {"total": 1.0})  # nodes gone: ignored


def test_real_training_stop_resume_register_segment(scene, tmp_path, logic):
    """A real `lightunetr train` subprocess (CSE reference recipe, tiny sizes) driven by the logic."""
    job = scenarios.training_run_scenario(logic, str(tmp_path / "job"), tiny_config(iterations=4, rank_uncertainty=True),
                                          timeout=TIMEOUT)
    assert os.path.isfile(os.path.join(job.runDir, "checkpoint.pt"))
    assert not os.path.exists(os.path.dirname(job.manifest)) and "case copies were deleted" in job.message
    assert os.path.basename(job.model.path) == "Tiny.lightunetr"
    assert all(r["uncertainty"] is not None for r in job.results)
    assert job not in logic.activeJobs
    # a second run with the same name gets a new model name
    assert logic.uniqueModelName("Tiny") == "Tiny-2"


def test_scene_close_stops_training_without_waiting(scene, tmp_path, logic):
    """Closing the scene detaches the running job and asks it to stop: the close returns at once (it used
    to wait up to a minute for the checkpoint), the process writes its checkpoint and ends on its own, no
    process of its tree is left, nothing lands in the next scene, and the run can be resumed."""
    cases = scenarios.training_scene(n_labeled=2, n_unlabeled=2)
    job = logic.start(logic.caseTable(), tiny_config(iterations=200), jobFolder=str(tmp_path / "job"))
    assert job.status == "exporting", job.message
    while job.status == "exporting":
        job.poll()  # one case per poll, as the widget's timer does
    assert job.status == "running", job.message
    pid = job.runner.process.pid
    pgid = os.getpgid(pid)
    children = []
    end = time.monotonic() + TIMEOUT
    while job.poll() and job.iteration < 1 and time.monotonic() < end:
        children = jobrunner.descendant_pids(pid) or children
        time.sleep(0.05)
    t0 = time.monotonic()
    scene.Clear(0)  # StartCloseEvent: the logic detaches and stops the job without waiting
    assert time.monotonic() - t0 < 2.0, "closing the scene waited for the training process"
    assert job.detached and not job.done and job.plot is None
    n_nodes = scene.GetNumberOfNodes()
    while logic.poll():
        assert time.monotonic() < end, "the stopped job did not end"
        time.sleep(0.05)
    assert job.status == "stopped" and job.resumable, job
    assert job.runner.returncode in (3, -15, -9)
    assert not [p for p in children if os.path.exists(f"/proc/{p}")]
    with pytest.raises(ProcessLookupError):  # nothing of the job's process group is left
        os.killpg(pgid, 0)
    assert scene.GetNumberOfNodes() == n_nodes, "the detached job added nodes to the new scene"
    logic.onSceneEndClose()
    assert not logic.activeJobs
    assert cases  # (the nodes were removed by the close)


def test_export_one_case_per_poll_and_cancel_leaves_nothing(scene, tmp_path, logic):
    scenarios.training_scene(n_labeled=2, n_unlabeled=2, shape_kji=(16, 16, 16))
    job = logic.start(logic.caseTable(), tiny_config(), jobFolder=str(tmp_path / "job"))
    assert job.status == "exporting" and job.export.total == 4 and job.export.done_count == 0
    job.poll()
    assert job.export.done_count == 1 and job.status == "exporting", job.message
    job.stop()
    assert job.status == "cancelled" and "nothing was kept" in job.message
    assert not job.canResume  # the widget's Resume stays disabled: there is nothing to resume from
    assert os.listdir(tmp_path / "job") == [], "a partial export was left behind"


def test_ui_has_the_widgets_the_module_uses():
    import ast
    import re
    import xml.etree.ElementTree as ET

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), "LightUNETRTraining")
    names = {w.get("name") for w in ET.parse(os.path.join(root, "Resources", "UI", "LightUNETRTraining.ui")).iter("widget")}
    with open(os.path.join(root, "LightUNETRTraining.py"), encoding="utf-8") as f:
        source = f.read()
    ast.parse(source)  # the module file (needs qt, so not imported here) is valid Python
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and not (used - names), f"widgets used but missing in the .ui: {sorted(used - names)}"


def test_segment_outside_volume_and_surface_source_reported(scene):
    from LightUNETRScenarios.segmentation import add_volume

    small, _, _ = scenarios.add_case("small", 1, geometry="axial", shape_kji=(12, 12, 12))
    big = add_volume("big", np.zeros((20, 20, 20), np.float32), "axial")  # same grid, larger
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:6, 2:6, 2:6] = 1
    lab[15:18, 15:18, 15:18] = 2  # outside 'small'
    seg = scenarios.add_segmentation("small seg", lab, big)
    unl = [scenarios.add_case(f"u{n}", n, geometry="axial", labeled=False, shape_kji=(12, 12, 12))[0] for n in range(2)]
    table = CaseTable.from_nodes([(small, seg)], unl)
    assert not table.check(TrainingConfig(batch_labeled=1))
    assert any("outside volume 'small'" in p for p in table.row("small").problems), table.report()
    lab[15:18, 15:18, 15:18] = 0  # inside only: fine, exported on the small grid
    seg2 = scenarios.add_segmentation("small seg2", lab, big)
    table = CaseTable.from_nodes([(small, seg2)], unl)
    assert table.check(TrainingConfig(batch_labeled=1)), table.report()
    seg2.GetSegmentation().SetSourceRepresentationName("Closed surface")
    assert not table.check(TrainingConfig(batch_labeled=1))
    assert "binary labelmap" in table.report()


def test_console_api_setup_and_run(scene, tmp_path, logic):
    cases = scenarios.training_scene(n_labeled=2, n_unlabeled=2, shape_kji=(16, 16, 16))
    pairs = [c[:2] for c in cases["labeled"]]
    table = logic.setup(pairs, cases["unlabeled"], {"batch_labeled": 2, "batch_unlabeled": 2})
    assert table.ok and table.classes == list(scenarios.CLASSES) and [r.role for r in table.rows] == [
        "labeled", "labeled", "unlabeled", "unlabeled"]
    table = logic.setup(pairs, cases["unlabeled"], {"batch_labeled": 3, "patch_size": (32, 32, 20)})
    assert not table.ok and "labelled batch size is 3" in table.report() and "multiple of 16" in table.report()
    job = logic.run(pairs, [], {"recipe": "cse-paper"}, jobFolder=str(tmp_path / "j"))  # blocking: fails at once
    assert job.status == "failed" and "No unlabelled case" in job.message and job.runner is None
    with pytest.raises(ValueError, match="Unknown training option"):
        logic.run(pairs, [], {"iters": 2})


def test_generated_nodes_are_kept_out_of_the_inputs(scene, logic):
    """An uncertainty map LightUNETR made is neither a volume to segment nor a training case."""
    from LightUNETRSlicerLib import generated
    from LightUNETRScenarios import segmentation as seg_scenarios

    volume = seg_scenarios.add_volume("patient", seg_scenarios.test_pattern().astype(np.float32), "oblique")
    uncertainty = seg_scenarios.add_volume("patient uncertainty", seg_scenarios.test_pattern().astype(np.float32),
                                           "oblique")
    assert [r.volume for r in logic.caseTable().rows] == [volume, uncertainty]  # unmarked: a volume like any other
    generated.mark_generated(uncertainty, "MyModel", "uncertainty")
    assert logic.segmentationLogic.inputVolumes() == [volume]
    assert [r.volume for r in logic.caseTable().rows] == [volume]


def test_ai_segmentations_are_unlabelled_until_reviewed(scene):
    """Edited, completed, flagged or confirmed with Mark reviewed: the review state of AI segments decides."""
    table = scenarios.review_scenario()
    assert {r.name: r.role for r in table.rows} == {"own": "labeled", "ai": "labeled", "free": "unlabeled"}
