"""The rules behind the modules' parameter nodes and the shared model library (Qt-free)."""

import os
import shutil

import pytest

from LightUNETRSlicerLib import parameters
from LightUNETRSegmentationLib import logic as logic_module
from LightUNETRSlicerLib.models import ModelError, ModelLibrary, read_model_info


def test_devices_per_operating_system():
    assert parameters.available_devices("darwin") == ("auto", "cpu", "cuda", "mps")
    assert parameters.available_devices("linux") == ("auto", "cpu", "cuda")
    assert parameters.available_devices("win32") == ("auto", "cpu", "cuda")
    assert parameters.device_problem("mps", "linux") and "macOS" in parameters.device_problem("mps", "linux")
    assert parameters.device_problem("mps", "darwin") is None
    assert parameters.device_problem("cuda:1", "linux") is None
    assert "Unknown device" in parameters.device_problem("tpu", "linux")
    # a scene from a Mac opened elsewhere: the value is replaced before the GUI is bound
    assert parameters.valid_choice("mps", parameters.available_devices("linux"), "auto") == "auto"
    assert parameters.clamp(1.5, *parameters.OVERLAP_RANGE) == 0.9


def _library_with(tmp_path, tiny_bundle, *names):
    lib = ModelLibrary(str(tmp_path / "lib"))
    for name in names:
        src = tmp_path / "src" / f"{name}.lightunetr"
        shutil.copytree(tiny_bundle, src)
        lib.add(str(src))
    return lib


def test_choose_model_keeps_the_node_the_source_of_truth(tmp_path, tiny_bundle):
    lib = _library_with(tmp_path, tiny_bundle, "alpha", "beta")
    models, _ = lib.discover()
    paths = {os.path.basename(m.path): m.path for m in models}
    # nothing chosen yet: the first model, written into the node (Apply enabled with one model)
    assert parameters.choose_model("", models) == (models[0].path, None)
    # the node's model is kept, found by path ...
    assert parameters.choose_model(paths["beta.lightunetr"], models) == (paths["beta.lightunetr"], None)
    # ... or, for a scene saved on another machine, by the bundle's folder name
    assert parameters.choose_model("/elsewhere/models/beta.lightunetr", models) == (paths["beta.lightunetr"], None)
    # a model that is not installed is replaced, and the user is told
    path, message = parameters.choose_model("/elsewhere/gamma.lightunetr", models)
    assert path == models[0].path and "gamma.lightunetr" in message and "not installed" in message
    assert parameters.choose_model("x", []) == ("", "The scene asks for model 'x', which is not installed.")
    assert parameters.choose_model("", []) == ("", None)


def test_library_tells_its_listeners(tmp_path, tiny_bundle):
    lib = ModelLibrary(str(tmp_path / "lib"))
    calls = []
    lib.add_listener(lambda: calls.append(len(lib.discover()[0])))
    info = lib.add(tiny_bundle)
    assert calls == [1]
    lib.remove(info.name)
    assert calls == [1, 0]
    lib.set_folder(str(tmp_path / "other"))
    assert calls == [1, 0, 0] and lib.folder == str(tmp_path / "other")

    def broken():
        raise RuntimeError("a widget that is being destroyed")

    lib.add_listener(broken)
    lib.add(tiny_bundle)  # a failing listener does not break the library
    assert calls[-1] == 1


def test_library_never_shows_a_half_written_bundle(tmp_path, tiny_bundle, monkeypatch):
    lib = ModelLibrary(str(tmp_path / "lib"))
    info = lib.add(tiny_bundle)
    card = os.path.join(info.path, "model_card.json")
    before = open(card, encoding="utf-8").read()

    def fail_copy(src, dst, *a, **k):
        os.makedirs(dst)
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", fail_copy)
    with pytest.raises(OSError, match="disk full"):
        lib.add(tiny_bundle, overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(lib.folder)) == [os.path.basename(info.path)], "temporary copy left behind"
    assert open(card, encoding="utf-8").read() == before and read_model_info(info.path).name == info.name
    with pytest.raises(ModelError, match="not in the models folder"):
        lib.remove(tiny_bundle)


def test_one_shared_logic():
    a = logic_module.shared_logic()
    assert logic_module.shared_logic(modelsFolder="/ignored") is a
