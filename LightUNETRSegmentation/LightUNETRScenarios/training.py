"""Scenarios shared by the pytest suite (slicer-core) and the Slicer self-test (real Slicer).

Only MRML, module logics, numpy and SimpleITK (both ship with Slicer): the same code runs in both.
Sizes are tiny (volumes of 32-40 voxels per axis, patch 32³) so a real training run takes seconds.
"""

from __future__ import annotations

import json
import os

import numpy as np
import slicer

from lightunetr_core.jobs import runner as jobrunner

from LightUNETRScenarios.segmentation import GEOMETRIES, add_volume, file_values_at_ras

CLASSES = ("Organ", "Tumor")
COLORS = {"Organ": (0.2, 0.8, 0.3), "Tumor": (0.9, 0.1, 0.6)}  # not the engine's default palette


def synthetic_case(shape_kji=(34, 36, 33), seed=0):
    """(image float32, labels uint8 with 1=Organ, 2=Tumor) KJI arrays: a bright box with a brighter
    blob inside, at a seeded position, plus noise — something a network can learn in a few steps."""
    rng = np.random.default_rng(seed)
    K, J, I = shape_kji
    lab = np.zeros(shape_kji, np.uint8)
    k0, j0, i0 = (int(rng.integers(3, max(4, n // 3))) for n in shape_kji)
    lab[k0 : k0 + K // 2, j0 : j0 + J // 2, i0 : i0 + I // 2] = 1
    lab[k0 + 2 : k0 + 2 + K // 6, j0 + 3 : j0 + 3 + J // 6, i0 + 2 : i0 + 2 + I // 5] = 2
    img = rng.normal(0.0, 0.3, shape_kji).astype(np.float32)
    img[lab == 1] += 2.0
    img[lab == 2] += 4.0
    return img, lab


def add_segmentation(name, labels_kji, volumeNode, classes=CLASSES, values=None):
    """Segmentation on the grid of ``volumeNode`` with one segment per class (``values[k]`` → class k;
    default 1..N), made with ``updateSegmentBinaryLabelmapFromArray`` like an editor result."""
    scene = volumeNode.GetScene()
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    values = values or list(range(1, len(classes) + 1))
    for cls, value in zip(classes, values):
        sid = seg.GetSegmentation().AddEmptySegment(cls, cls)
        if cls in COLORS:
            seg.GetSegmentation().GetSegment(sid).SetColor(*COLORS[cls])
        slicer.util.updateSegmentBinaryLabelmapFromArray((labels_kji == value).astype(np.uint8), seg, sid, volumeNode)
    return seg


def place_in_folder(nodes, folderName, scene=None):
    """Put nodes in a subject-hierarchy folder (created under the scene); returns the folder item."""
    scene = scene or slicer.mrmlScene
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), folderName)
    for n in nodes:
        item = sh.GetItemByDataNode(n) or sh.CreateItem(sh.GetSceneItemID(), n)
        sh.SetItemParent(item, folder)
    return folder


def add_case(name, seed, geometry="anisotropic", labeled=True, shape_kji=(34, 36, 33), classes=CLASSES,
             folder=None, link_reference=True):
    """A volume (and its segmentation when ``labeled``). ``link_reference=False`` leaves the
    segmentation's reference-geometry link empty, so only the subject-hierarchy folder pairs them."""
    img, lab = synthetic_case(shape_kji, seed)
    vol = add_volume(name, img, geometry)
    seg = None
    if labeled:
        seg = add_segmentation(f"{name} segmentation", lab, vol, classes)
        if not link_reference:
            seg.RemoveNodeReferenceIDs(seg.GetReferenceImageGeometryReferenceRole())
    if folder:
        place_in_folder([vol] + ([seg] if seg else []), folder)
    return vol, seg, lab


def training_scene(n_labeled=2, n_unlabeled=2, n_validation=0, geometry="anisotropic", shape_kji=(32, 32, 32)):
    """Cases for a training run: labelled (linked by reference geometry), unlabelled, validation.
    Returns {"labeled": [(vol, seg, lab)], "unlabeled": [vol], "validation": [(vol, seg, lab)]}."""
    out = {"labeled": [], "unlabeled": [], "validation": []}
    for n in range(n_labeled):
        out["labeled"].append(add_case(f"lab{n}", seed=10 + n, geometry=geometry, shape_kji=shape_kji))
    for n in range(n_validation):
        out["validation"].append(add_case(f"val{n}", seed=30 + n, geometry=geometry, shape_kji=shape_kji))
    for n in range(n_unlabeled):
        out["unlabeled"].append(add_case(f"unl{n}", seed=20 + n, geometry=geometry, labeled=False, shape_kji=shape_kji)[0])
    return out


# ---------------------------------------------------------------------- case table
def case_table_scenario():
    """Scene: two labelled cases (one linked by reference geometry, one only by a subject-hierarchy
    folder), two unlabelled volumes, one label map (not a case). Checks the table. Returns it."""
    from LightUNETRTrainingLib.cases import CaseTable

    a, sa, _ = add_case("caseA", 1)
    b, sb, _ = add_case("caseB", 2, geometry="oblique", folder="patient B", link_reference=False)
    u1, _, _ = add_case("unlabeledC", 3, labeled=False)
    u2, _, _ = add_case("unlabeledD", 4, labeled=False, folder="patient D")
    add_volume("some labelmap", np.zeros((8, 8, 8), np.uint8), "axial", labelmap=True)
    table = CaseTable.from_scene()
    names = {r.name: r for r in table.rows}
    _expect(set(names) == {"caseA", "caseB", "unlabeledC", "unlabeledD"}, f"rows {sorted(names)}")
    _expect(names["caseA"].segmentation is sa and names["caseA"].role == "labeled", "caseA paired by reference")
    _expect(names["caseB"].segmentation is sb and names["caseB"].role == "labeled", "caseB paired by folder")
    _expect(names["unlabeledC"].role == "unlabeled" and names["unlabeledC"].segmentation is None, "unlabeledC")
    _expect(names["unlabeledD"].role == "unlabeled", "unlabeledD")
    _expect(table.classes == list(CLASSES), f"classes {table.classes}")
    from LightUNETRTrainingLib.config import TrainingConfig

    ok = table.check(TrainingConfig(batch_labeled=2, batch_unlabeled=2))
    _expect(ok, "table should be valid:\n" + table.report())
    # one folder only
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    folder = sh.GetItemParent(sh.GetItemByDataNode(b))
    sub = CaseTable.from_scene(folderItemId=folder)
    _expect([r.name for r in sub.rows] == ["caseB"] and sub.rows[0].segmentation is sb, "folder table")
    return table


def invalid_setups_scenario(logic, jobFolder):
    """Invalid setups are reported per case and nothing starts. Returns {case: report}."""
    from LightUNETRTrainingLib.cases import CaseTable
    from LightUNETRTrainingLib.config import TrainingConfig

    scene = slicer.mrmlScene
    config = TrainingConfig(recipe="cse-reference", batch_labeled=1, batch_unlabeled=1, iterations=2,
                            patch_size=(32, 32, 32))
    a, sa, _ = add_case("goodA", 1)
    b, sb, _ = add_case("renamedB", 2, classes=("Organ", "Lesion"))
    c, sc, lab_c = add_case("regriddedC", 3)
    u, _, _ = add_case("unl", 4, labeled=False)
    # C's segmentation on another grid: a half-voxel shift of its reference geometry
    other = add_volume("other grid", np.zeros((34, 36, 33), np.float32), "oblique")
    sc2 = add_segmentation("regriddedC other-grid segmentation", lab_c, other)
    other.SetHideFromEditors(True)  # not a case itself
    reports = {}

    def attempt(label, table, expect_row=None, expect_text=None):
        n_nodes = scene.GetNumberOfNodes()
        job = logic.start(table, config, jobFolder=os.path.join(jobFolder, label.replace(" ", "_")))
        _expect(job.status == "failed" and job.runner is None, f"{label}: expected failure without a process, got {job}")
        _expect(not os.path.exists(os.path.join(jobFolder, label.replace(" ", "_"), "data")), f"{label}: data written")
        _expect(scene.GetNumberOfNodes() == n_nodes, f"{label}: the scene changed")
        if expect_row is not None:
            row = table.row(expect_row)
            _expect(any(expect_text in p for p in row.problems), f"{label}: row {expect_row} problems {row.problems}")
            others = [r for r in table.rows if r is not row and r.problems]
            _expect(not others, f"{label}: other rows flagged: {others}")
        else:
            _expect(any(expect_text in p for p in table.problems), f"{label}: table problems {table.problems}")
        reports[label] = table.report()

    attempt("no labeled case", CaseTable.from_nodes([], [u]), None, "No labelled case")
    attempt("mismatched classes", CaseTable.from_nodes([(a, sa), (b, sb)], [u]), "renamedB", "no segment named 'Tumor'")
    attempt("other grid", CaseTable.from_nodes([(a, sa), (c, sc2)], [u]), "regriddedC", "another voxel grid")
    attempt("no segmentation", CaseTable.from_nodes([(a, sa), (c, None)], [u]), "regriddedC", "needs a segmentation")
    attempt("no unlabeled for CSE", CaseTable.from_nodes([(a, sa)], []), None, "No unlabelled case")
    return reports


# ---------------------------------------------------------------------- export
def export_check_scenario(tmpdir):
    """Export labelled (anisotropic and oblique) and unlabelled cases; read every file back with
    SimpleITK and compare in physical space with the scene's volumes and segments. Returns the export."""
    import SimpleITK as sitk

    from LightUNETRTrainingLib.cases import CaseTable
    from LightUNETRTrainingLib.config import TrainingConfig
    from LightUNETRTrainingLib.export import export_cases

    a, sa, lab_a = add_case("aniso", 5, geometry="anisotropic", shape_kji=(20, 22, 18))
    b, sb, lab_b = add_case("obl", 6, geometry="oblique", shape_kji=(21, 19, 17))
    # b's segments listed in the other order: class values must follow the table, not the segment order
    seg = sb.GetSegmentation()
    seg.SetSegmentIndex(seg.GetSegmentIdBySegmentName("Tumor"), 0)
    u, _, _ = add_case("unl", 7, geometry="left-handed-oblique", labeled=False, shape_kji=(16, 18, 20))
    table = CaseTable.from_nodes([(a, sa), (b, sb)], [u])
    result = export_cases(table, tmpdir, TrainingConfig(batch_labeled=2, batch_unlabeled=1))
    import json

    with open(result.manifest, encoding="utf-8") as f:
        manifest = json.load(f)
    _expect(manifest["labels"] == {"0": "background", "1": "Organ", "2": "Tumor"}, f"labels {manifest['labels']}")
    _expect([c["role"] for c in manifest["cases"]] == ["labeled", "labeled", "unlabeled"], "roles")
    for vol, lab, cid in ((a, lab_a, "aniso"), (b, lab_b, "obl"), (u, None, "unl")):
        files = result.files[cid]
        ras, values = _voxel_table(vol)
        img = sitk.ReadImage(files["image"])
        got = file_values_at_ras(img, ras)
        _expect(np.array_equal(got, values), f"{cid}: image voxels differ")
        if lab is not None:
            lab_img = sitk.ReadImage(files["label"])
            got = file_values_at_ras(lab_img, ras)
            _expect(np.array_equal(got, lab.ravel()), f"{cid}: {np.count_nonzero(got != lab.ravel())} label voxels differ")
            _expect(lab_img.GetSize() == img.GetSize(), f"{cid}: label grid size")
    return result


def review_scenario():
    """An AI segmentation (as the Segmentation module or a training run leaves it) is an unlabelled case
    until each of its AI segments was reviewed: edited or completed in the Segment Editor, or confirmed
    with "Mark reviewed"; a flagged segment keeps it out. The user's own segmentations are labelled."""
    from LightUNETRSlicerLib import generated

    from LightUNETRTrainingLib.cases import CaseTable
    from LightUNETRTrainingLib.config import TrainingConfig

    add_case("own", 1)
    _, ai_seg, _ = add_case("ai", 2)
    generated.mark_generated(ai_seg, "MyModel", "segmentation")
    for i in range(ai_seg.GetSegmentation().GetNumberOfSegments()):
        generated.mark_generated_segment(ai_seg.GetSegmentation().GetNthSegment(i), "MyModel")
    add_case("free", 3, labeled=False)
    config = TrainingConfig(batch_labeled=1, batch_unlabeled=1)

    def rows():
        return {r.name: r for r in CaseTable.from_scene().rows}

    r = rows()
    _expect(r["own"].role == "labeled" and r["own"].review == generated.NOT_GENERATED, f"own case {r['own']}")
    _expect(r["ai"].role == "unlabeled" and r["ai"].review == generated.NEEDS_REVIEW, f"AI case {r['ai']}")
    table = CaseTable.from_scene()
    table.set_role("ai", "labeled")
    _expect(not table.check(config) and "not yet reviewed" in table.report(), "an unreviewed AI case was accepted")
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    segmentation = ai_seg.GetSegmentation()
    logic.SetSegmentStatus(segmentation.GetNthSegment(0), logic.InProgress)  # the editor changed one segment
    _expect(rows()["ai"].role == "unlabeled", "one edited segment of two does not review the whole result")
    logic.SetSegmentStatus(segmentation.GetNthSegment(1), logic.Flagged)
    _expect(rows()["ai"].review == generated.FLAGGED, "a flagged segment")
    generated.mark_reviewed(ai_seg)
    r = rows()
    _expect(r["ai"].role == "labeled" and r["ai"].review == generated.REVIEWED, f"after Mark reviewed: {r['ai']}")
    table = CaseTable.from_scene()
    _expect(table.check(config), table.report())
    return table


# ---------------------------------------------------------------------- training
def training_run_scenario(logic, jobFolder, config, timeout=600):
    """A real short training run from the case table of the scene: stop after the first iteration
    (checkpoint), resume to the end, the bundle is registered in the segmentation module's library and
    the unlabelled cases are segmented (and ranked by uncertainty when ``config.rank_uncertainty``).
    Returns the job."""
    cases = training_scene(n_labeled=2, n_unlabeled=2, n_validation=1)
    table = logic.caseTable()
    table.set_role("val0", "validation")
    seen = {"progress": 0, "validation": 0}
    job = logic.start(table, config, jobFolder=jobFolder,
                      on_progress=lambda j, ev: seen.__setitem__("progress", seen["progress"] + 1),
                      on_validation=lambda j, ev: seen.__setitem__("validation", seen["validation"] + 1))
    _expect(job.status in ("exporting", "running"), f"training did not start: {job.message}")
    try:
        jobrunner.poll_until_done(lambda: job.poll() and job.iteration < 1, timeout, "training before its first iteration")
    except TimeoutError as exc:
        _expect(False, f"no training progress in time: {exc}")
    _expect(job.status == "running", f"finished before the stop test could run: {job}\n" + "\n".join(job.log[-20:]))
    with open(job.manifest, encoding="utf-8") as f:
        roles = sorted(c["role"] for c in json.load(f)["cases"])
    _expect(roles == ["labeled", "labeled", "unlabeled", "unlabeled", "validation"], f"exported roles {roles}")
    first = job.iteration
    _expect(job.it_per_s and job.eta_s is not None and "total" in job.loss, f"progress fields: {job.loss}")
    job.stop()
    job.wait(timeout)
    _expect(job.status == "stopped" and job.resumable, f"stop: {job} " + "\n".join(job.log[-20:]))
    stopped_at = job.iteration
    _expect(first <= stopped_at < job.total, f"stopped at {stopped_at} of {job.total}")
    job.resume()
    job.wait(timeout)
    _expect(job.ok, f"resume: {job}\n" + "\n".join(job.log[-20:]))
    started = [e for e in job.events if e.get("event") == "started"]
    _expect(len(started) == 2 and started[1].get("start_iteration") == stopped_at,
            f"the second run must continue from iteration {stopped_at}: {[e.get('start_iteration') for e in started]}")
    _expect(job.iteration == job.total, "did not reach the last iteration")
    _expect(seen["progress"] >= 2 and seen["validation"] >= 1 and job.dice is not None, f"callbacks {seen}")
    if job.plot is not None:
        iters = job.plot.column(job.plot.lossTable, "iteration")
        _expect(len(iters) >= 2 and iters[-1] == job.total, f"plot rows {iters}")
        _expect(len(job.plot.column(job.plot.diceTable, "dice")) >= 1, "no validation point in the plot")
    # registered with its card
    models, _ = logic.segmentationLogic.models()
    _expect(job.model is not None and job.model.path in [m.path for m in models], "model not in the library")
    _expect(job.model.label_names == list(CLASSES), f"card labels {job.model.label_names}")
    first_seg = cases["labeled"][0][1].GetSegmentation()
    for spec in job.model.labels:  # the segments' colours went into the card
        want = first_seg.GetSegment(first_seg.GetSegmentIdBySegmentName(spec.name)).GetColor()
        _expect(np.allclose(spec.color, want, atol=1e-6), f"colour of {spec.name}: {spec.color} vs {want}")
    # the job folder's copies of patient data are gone unless kept; the registered model stays
    copies = [os.path.dirname(job.manifest), os.path.join(job.runDir, "cache")]
    _expect(all(os.path.isdir(c) == bool(config.keep_case_data) for c in copies),
            f"case copies {copies} after training (keep_case_data={config.keep_case_data}): {job.message}")
    _expect(os.path.isdir(job.model.path) and os.path.isfile(os.path.join(job.runDir, "checkpoint.pt")),
            "the registered model or the run's checkpoint went with the case copies")
    # unlabelled cases segmented
    _expect(len(job.results) == 2 and all(r["ok"] for r in job.results), f"results {job.results}")
    for r, vol in zip(job.results, cases["unlabeled"]):
        _expect(r["volume"] is vol, "results in case order")
        seg = r["segmentation"].GetSegmentation()
        _expect([seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == list(CLASSES),
                "segment names of the result")
        _expect(np.allclose(seg.GetNthSegment(0).GetColor(), job.model.labels[0].color), "result colour")
    # next round: the results are attached to their volumes but the cases stay unlabelled until reviewed,
    # and the uncertainty maps are not cases
    again = {r.name: r for r in logic.caseTable().rows}
    _expect(set(again) == {"lab0", "lab1", "val0", "unl0", "unl1"}, f"rows after training: {sorted(again)}")
    for r in job.results:
        row = again[r["volume"].GetName()]
        _expect(row.role == "unlabeled" and row.segmentation is r["segmentation"], f"generated result row {row}")
    if config.rank_uncertainty:
        _expect(len(job.ranking) == 2, "ranking")
        _expect(all(r["reviewScore"] is not None and r["review"]["margin_mm"] > 0 for r in job.ranking),
                f"the engine's review score is missing: {job.ranking}")
        _expect(job.ranking[0]["reviewScore"] >= job.ranking[1]["reviewScore"], "ranking order")
    return job


def reopen_scenario(logic, newLogic, jobFolder, config, timeout=600):
    """Resume after a restart: a run is stopped after its first iteration; ``newLogic`` (a fresh
    :class:`~LightUNETRTrainingLib.logic.TrainingLogic` on the same jobs folder, as after Slicer restarted) lists
    it, opens it from its run folder with the scene cleared, shows where it stopped, resumes it from the
    checkpoint to the end and registers its model. Returns the reopened job."""
    import os

    training_scene(n_labeled=2, n_unlabeled=2, shape_kji=(24, 24, 24))
    job = logic.start(logic.caseTable(), config, jobFolder=jobFolder)
    try:
        jobrunner.poll_until_done(lambda: job.poll() and job.iteration < 1, timeout, "training before its first iteration")
    except TimeoutError as exc:
        _expect(False, f"no training progress in time: {exc}")
    job.stop()
    job.wait(timeout)
    _expect(job.status == "stopped", f"stop: {job}")
    stopped_at = job.iteration
    runs = newLogic.runs()
    _expect([(r["folder"], r["resumable"]) for r in runs][:1] == [(os.path.abspath(jobFolder), True)],
            f"the stopped run is not listed first as resumable: {runs}")
    slicer.mrmlScene.Clear(0)  # the cases were exported with the job; the scene is not needed
    again = newLogic.openRun(os.path.join(jobFolder, "run"))
    _expect(again.status == "stopped" and again.iteration == stopped_at and again.total == config.iterations,
            f"reopened: {again}")
    _expect(bool(again.loss_history) and "total" in again.loss_history[-1][1], "the loss history was not restored")
    again.resume()
    again.wait(timeout)
    _expect(again.ok, f"resume after restart: {again}\n" + "\n".join(again.log[-20:]))
    starts = [e.get("start_iteration") for e in again.events if e.get("event") == "started"]
    _expect(starts == [stopped_at] and again.iteration == config.iterations, f"continued from {starts}")
    _expect(again.model is not None and again.model.name == config.name, f"model {again.model}")
    return again


def _voxel_table(volumeNode):
    from LightUNETRScenarios.segmentation import physical_voxel_table

    return physical_voxel_table(volumeNode)


def _expect(cond, message):
    if not cond:
        raise AssertionError(message)


__all__ = ["GEOMETRIES", "synthetic_case", "add_segmentation", "add_case", "training_scene", "case_table_scenario",
           "invalid_setups_scenario", "export_check_scenario", "training_run_scenario"]
