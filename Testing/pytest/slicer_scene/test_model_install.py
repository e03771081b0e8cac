"""Getting a model from the GUI's logic, on a real slicer-core scene, with real subprocesses and a real HTTP
server on 127.0.0.1: "Download" of a catalog model, "Add model..." of a zipped bundle or of an authors'
``.pth`` (converted with a preset), the card shown first; Training's "Start from" a catalog model (downloaded,
then fine-tuned with its own preprocessing), and resuming a stopped run after a restart (a new logic)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from loopback_server import LoopbackServer
from LightUNETRSlicerLib import modelinstall
from LightUNETRSegmentationLib.logic import SegmentationLogic
from LightUNETRSlicerLib.models import ModelError
from LightUNETRTrainingLib import startfrom
from LightUNETRScenarios import training as scenarios
from LightUNETRTrainingLib.config import TrainingConfig
from LightUNETRTrainingLib.logic import RunFolderError, TrainingLogic

TIMEOUT = 600
ENTRY = "la-8lab"


@pytest.fixture(scope="module")
def checkpoint(fixtures_dir, tmp_path_factory):
    """The shared reference network saved as the authors save theirs (a plain state_dict, preset "la")."""
    reference = torch.load(fixtures_dir / "reference_lightunetr_112x112x80.pt", weights_only=True)
    path = tmp_path_factory.mktemp("ckpt") / "lightunetr_best_model_la_8lab.pth"
    torch.save(reference["state_dict"], path)
    return path


@pytest.fixture
def server(checkpoint):
    srv = LoopbackServer({checkpoint.name: checkpoint.read_bytes()})
    yield srv
    srv.close()


@pytest.fixture
def seg_logic(tmp_path, server):
    lg = SegmentationLogic(modelsFolder=str(tmp_path / "models"))
    lg.extraEnvironment = {"OMP_NUM_THREADS": "1", "LIGHTUNETR_CATALOG_BASE_URL": server.url,
                           "LIGHTUNETR_CACHE": str(tmp_path / "cache")}
    yield lg
    lg.shutdown()


def _files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs) \
        if os.path.isdir(folder) else []


def test_download_button_logic_installs_and_tells_every_model_list(seg_logic, server):
    changes = []
    seg_logic.library.add_listener(lambda: changes.append(1))
    progress = []
    job = seg_logic.downloadModel(ENTRY, on_progress=lambda j: progress.append(j.message))
    assert job.wait(TIMEOUT) == "completed", job.message + "\n".join(job.log[-20:])
    assert job.model.name == ENTRY and changes, "the library did not announce the new model"
    assert any("MB" in m for m in progress), progress
    models, problems = seg_logic.models()
    assert [m.name for m in models] == [ENTRY] and not problems
    card = models[0].card
    assert card["license"].startswith("MIT") and card["provenance"]["catalog"] == ENTRY
    assert modelinstall.installed_catalog_models(seg_logic.library)[ENTRY].path == models[0].path
    text = modelinstall.describe_card(card)
    assert "Licence: MIT" in text and "left atrium" in text and "0.625x0.625x0.625 mm" in text and "Crop/ROI" in text
    assert job not in seg_logic.installJobs or job.done


def test_cancel_and_a_broken_download_leave_the_library_empty(seg_logic, server, tmp_path):
    server.mode = "slow"
    job = seg_logic.downloadModel(ENTRY)
    assert server.first_chunk_sent.wait(60)
    job.cancel()
    assert job.wait(TIMEOUT) == "cancelled", job.message
    assert "nothing was added" in job.message
    server.mode = "truncated"
    job = seg_logic.downloadModel(ENTRY)
    assert job.wait(TIMEOUT) == "failed" and "interrupted" in job.message, job.message
    assert seg_logic.models() == ([], [])
    assert [f for f in _files(tmp_path / "models") + _files(tmp_path / "cache")] == []


def test_add_model_converts_an_authors_pth_with_a_preset(seg_logic, checkpoint, tmp_path):
    assert modelinstall.bundle_name_for(str(checkpoint)) == "la_8lab"
    assert set(modelinstall.presets()) == {"la", "pancreas", "brats"}
    job = seg_logic.importCheckpoint(str(checkpoint), "la")
    assert job.wait(TIMEOUT) == "completed", job.message + "\n".join(job.log[-20:])
    assert job.model.name == "la_8lab" and job.model.card["provenance"]["preset"] == "la"
    with pytest.raises(ModelError, match="already installed"):
        seg_logic.importCheckpoint(str(checkpoint), "la")
    # a file that is not that network: the job fails with the engine's reason, nothing is added
    bad = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    job = seg_logic.importCheckpoint(str(bad), "la")
    assert job.wait(TIMEOUT) == "failed" and "not those of the reference" in job.message, job.message
    assert [m.name for m in seg_logic.models()[0]] == ["la_8lab"]
    with pytest.raises(ModelError, match="no such file"):
        seg_logic.importCheckpoint(str(tmp_path / "missing.pth"), "la")


def test_add_model_takes_a_zipped_bundle_and_shows_its_card_first(seg_logic, tmp_path):
    from lightunetr_core.bundle import export_bundle_zip
    from LightUNETRScenarios import segmentation as seg_scenarios

    assert seg_scenarios.zipped_bundle_scenario(seg_logic, tmp_path / "scenario").name == "zipped"  # also the self-test
    seg_logic.removeModel("zipped")
    source = scenarios_bundle(tmp_path / "src")
    archive = export_bundle_zip(source, tmp_path / "shared.zip")
    card = modelinstall.peek_card(str(archive))  # read from inside the zip: nothing copied yet
    assert card["name"] == "shared" and seg_logic.models() == ([], [])
    assert "Licence: CC-BY-4.0" in modelinstall.describe_card(card)
    info = seg_logic.addModelFromFile(str(archive))
    assert info.name == "shared" and [m.name for m in seg_logic.models()[0]] == ["shared"]
    with pytest.raises(ModelError, match="already exists"):
        seg_logic.addModelFromFile(str(archive))
    # a folder bundle whose weights were changed is refused; nothing is added
    weights = os.path.join(source, "model.safetensors")
    with open(weights, "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(ModelError, match="SHA-256"):
        seg_logic.library.add(str(source), overwrite=True)
    assert _files(tmp_path / "models") == ["shared.lightunetr/model.safetensors", "shared.lightunetr/model_card.json"]
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot be read as a zipped bundle"):
        modelinstall.peek_card(str(tmp_path / "junk.zip"))


def scenarios_bundle(folder):
    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.data.preprocessing import IntensityNormalization, PreprocessingPlan
    from lightunetr_core.models import build_model

    args = {"in_channels": 1, "num_classes": 2, "patch_size": [32, 32, 32]}
    plan = PreprocessingPlan(target_spacing=(1.0, 1.0, 1.0), normalization=[IntensityNormalization("zscore")])
    card = ModelCard(name="shared", architecture="lightunetr", architecture_args=args, patch_size=[32, 32, 32],
                     preprocessing=plan.to_dict(), input_channels=["MR"], labels=default_labels(["background", "Organ"]),
                     version="1.2", license="CC-BY-4.0", authors="A. Author")
    return str(save_bundle(folder / "shared.lightunetr", build_model("lightunetr", **args), card))


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture
def training_logic(scene, tmp_path, seg_logic):
    lg = TrainingLogic(segmentationLogic=seg_logic, jobsFolder=str(tmp_path / "jobs"), scene=scene)
    lg.extraEnvironment = dict(seg_logic.extraEnvironment)
    lg.stopGraceSeconds = 60
    yield lg
    lg.shutdown()


def test_start_from_choices_and_what_a_starting_model_fixes(seg_logic, tmp_path):
    values = [v for _, v, _ in startfrom.choices(seg_logic.library)]
    assert values[0] == "" and f"catalog:{ENTRY}" in values and "catalog:brats-25lab" in values
    card = startfrom.card_for(f"catalog:{ENTRY}")
    assert startfrom.fixed_settings(card) == {"architecture": "lightunetr", "patch_size": (112, 112, 80),
                                              "target_spacing": (0.625, 0.625, 0.625)}
    config = TrainingConfig(init_bundle=f"catalog:{ENTRY}", patch_size=(96, 96, 96))
    problems = startfrom.problems(config, ["Organ", "Tumor"])
    assert any("same patch size" in p for p in problems)
    assert any("segments 1 structure(s) (left atrium); the cases have 2" in p for p in problems)
    assert startfrom.problems(TrainingConfig(init_bundle=f"catalog:{ENTRY}", patch_size=(112, 112, 80)), ["LA"]) == []
    assert startfrom.problems(TrainingConfig(init_bundle=str(tmp_path / "gone.lightunetr")), ["LA"])[0].startswith(
        "the starting model")
    # what the Training form shows and locks
    assert startfrom.form_values(card) == {"architecture": "lightunetr", "patchSize": "112,112,80",
                                           "targetSpacing": "0.625,0.625,0.625", "modality": "MR"}
    assert startfrom.form_values(startfrom.card_for("catalog:pancreas-6lab"))["modality"] == "CT"
    assert startfrom.form_values({**card, "architecture": "unet"}) == {} and startfrom.form_values(None) == {}
    # a catalog choice that was downloaded meanwhile becomes the library model
    assert startfrom.resolve(f"catalog:{ENTRY}", seg_logic.library) == f"catalog:{ENTRY}"
    assert seg_logic.downloadModel(ENTRY).wait(TIMEOUT) == "completed"
    installed = startfrom.resolve(f"catalog:{ENTRY}", seg_logic.library)
    assert installed.endswith(f"{ENTRY}.lightunetr") and installed in [v for _, v, _ in startfrom.choices(seg_logic.library)]
    assert f"catalog:{ENTRY}" not in [v for _, v, _ in startfrom.choices(seg_logic.library)]


def test_fine_tune_from_a_catalog_model_downloads_it_first(scene, tmp_path, training_logic, seg_logic, server):
    """Start from "catalog:la-8lab": the job downloads the model (local server), exports the cases and trains
    from its weights with its spacing; the new model lands in the library beside the downloaded one."""
    from lightunetr_core.bundle import read_model_card

    for n in range(2):
        scenarios.add_case(f"lab{n}", seed=n, classes=("LA",))
    for n in range(2):
        scenarios.add_case(f"unl{n}", seed=10 + n, labeled=False)
    config = TrainingConfig(name="LAtuned", recipe="cse-reference", iterations=1, patch_size=(112, 112, 80),
                            batch_labeled=1, batch_unlabeled=1, val_every=0, device="cpu", threads=2,
                            init_bundle=f"catalog:{ENTRY}", target_spacing=(2.0, 2.0, 2.0), segment_unlabeled=False,
                            plot=False, keep_case_data=True)  # the manifest is read below
    job = training_logic.start(training_logic.caseTable(), config, jobFolder=str(tmp_path / "job"))
    assert job.status == "downloading", job.message
    job.wait(TIMEOUT)
    assert job.ok, job.message + "\n".join(job.log[-30:])
    installed = modelinstall.installed_catalog_models(seg_logic.library)
    assert ENTRY in installed and job.config.init_bundle == installed[ENTRY].path
    with open(job.manifest, encoding="utf-8") as f:
        assert "preprocessing" not in json.load(f), "fine-tuning must keep the model's own preprocessing"
    tuned = read_model_card(job.model.path)
    assert tuned.plan.target_spacing == (0.625, 0.625, 0.625) and tuned.label_names == ["background", "LA"]
    assert {m.name for m in seg_logic.models()[0]} == {ENTRY, "LAtuned"}


def test_resume_a_stopped_run_after_a_restart(scene, tmp_path, training_logic, seg_logic):
    config = TrainingConfig(name="Again", iterations=3, patch_size=(32, 32, 32), batch_labeled=2, batch_unlabeled=2,
                            val_every=1, device="cpu", threads=1, plot=False, segment_unlabeled=False)
    fresh = TrainingLogic(segmentationLogic=seg_logic, jobsFolder=str(tmp_path / "jobs"), scene=scene)
    fresh.extraEnvironment = dict(training_logic.extraEnvironment)
    try:
        with pytest.raises(RunFolderError, match="no job.json"):
            fresh.openRun(str(tmp_path))
        scenarios.reopen_scenario(training_logic, fresh, str(tmp_path / "jobs" / "Again-1"), config, timeout=TIMEOUT)
        with pytest.raises(RunFolderError, match="already running|format"):
            damaged = tmp_path / "jobs" / "Again-1" / "job.json"
            damaged.write_text(damaged.read_text().replace('"format": 1', '"format": 9'))
            fresh.openRun(str(tmp_path / "jobs" / "Again-1"))
    finally:
        fresh.shutdown()
