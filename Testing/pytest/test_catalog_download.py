"""``lightunetr download``: a catalog model fetched from a real HTTP server on 127.0.0.1 (the authors'
checkpoint format: a plain state_dict), verified and converted into a bundle; failures leave nothing.

Also the one-file bundle (``export-bundle`` → ``.zip`` → ``extract_bundle_zip``), which the Slicer module's
"Add model..." accepts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from lightunetr_core.bundle import BundleError, export_bundle_zip, extract_bundle_zip, load_bundle, sha256_file
from lightunetr_core.catalog.catalog import load_catalog
from lightunetr_core.catalog.download import DownloadError, cache_folder, download_model
from lightunetr_core.cli import main
from loopback_server import LoopbackServer

ENTRY = "la-8lab"  # preset la: Light-UNETR, patch 112x112x80, as the shared reference fixture


@pytest.fixture(scope="module")
def checkpoint_bytes(fixtures_dir, tmp_path_factory) -> bytes:
    """The shared reference network's weights saved as the authors save theirs (torch.save(state_dict))."""
    reference = torch.load(fixtures_dir / "reference_lightunetr_112x112x80.pt", weights_only=True)
    path = tmp_path_factory.mktemp("ckpt") / "best.pth"
    torch.save(reference["state_dict"], path)
    return path.read_bytes()


@pytest.fixture
def server(checkpoint_bytes):
    entry = load_catalog()[ENTRY]
    srv = LoopbackServer({entry.file: checkpoint_bytes})
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LIGHTUNETR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LIGHTUNETR_CATALOG_BASE_URL", raising=False)
    return tmp_path / "cache"


def _leftovers(*folders: Path) -> list[str]:
    """Files, bundles and hidden (temporary) folders under ``folders``; the empty cache folder does not count."""
    return sorted(str(p.relative_to(f)) for f in folders if f.exists() for p in f.rglob("*")
                  if p.is_file() or p.name.startswith(".") or p.name.endswith(".lightunetr"))


def test_download_installs_a_verified_bundle_with_its_provenance(server, cache, tmp_path, fixtures_dir, capsys):
    models = tmp_path / "models"
    rc = main(["download", ENTRY, "--models-dir", str(models), "--base-url", server.url])
    assert rc == 0, capsys.readouterr().err
    bundle = models / f"{ENTRY}.lightunetr"
    loaded = load_bundle(bundle)
    card = loaded.card
    entry = load_catalog()[ENTRY]
    assert card.name == ENTRY and card.license == entry.license and "liu2025harnessing" in card.citation
    assert card.provenance["catalog"] == ENTRY and card.provenance["url"] == entry.url
    assert card.provenance["source_sha256"] == sha256_file(cache_folder() / entry.file)
    assert card.plan.target_spacing == (0.625, 0.625, 0.625) and card.label_names == ["background", "left atrium"]
    # the converted network is the reference network: same logits as the authors' code
    reference = torch.load(fixtures_dir / "reference_lightunetr_112x112x80.pt", weights_only=True)
    with torch.no_grad():
        logits = loaded.model(reference["input"].float())
    assert (logits - reference["logits"]).abs().max() <= 1e-4 * max(1.0, float(reference["logits"].abs().max()))
    # nothing else in the library: no hidden half-written folders
    assert _leftovers(models) == [f"{ENTRY}.lightunetr", f"{ENTRY}.lightunetr/model.safetensors",
                                  f"{ENTRY}.lightunetr/model_card.json"]
    # again: already installed, no request; with --overwrite the verified cached file is converted, no request
    served = len(server.requests)
    assert main(["download", ENTRY, "--models-dir", str(models), "--base-url", server.url]) == 0
    assert main(["download", ENTRY, "--models-dir", str(models), "--base-url", server.url, "--overwrite"]) == 0
    assert len(server.requests) == served
    again = load_bundle(bundle).model.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in loaded.model.state_dict().items())


@pytest.mark.parametrize("mode", ["truncated", "corrupt"])
def test_a_broken_download_leaves_nothing(server, cache, tmp_path, mode, capsys):
    server.mode = mode
    models = tmp_path / "models"
    rc = main(["download", ENTRY, "--models-dir", str(models), "--base-url", server.url, "--events", "json"])
    out = capsys.readouterr().out
    assert rc == 1
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    message = next(e["message"] for e in events if e["event"] == "error")
    assert ("interrupted" if mode == "truncated" else "not a valid checkpoint") in message and "nothing was kept" in message
    assert _leftovers(models, cache) == [], "a failed download left files behind"
    # a later, good download works (no poisoned cache)
    server.mode = "ok"
    assert main(["download", ENTRY, "--models-dir", str(models), "--base-url", server.url]) == 0


def test_a_published_sha256_that_differs_is_refused(server, cache, tmp_path):
    entry = dataclasses.replace(load_catalog()[ENTRY], sha256="0" * 64)
    with pytest.raises(DownloadError, match="not the published one"):
        download_model(entry, tmp_path / "models", base_url=server.url)
    assert _leftovers(tmp_path / "models", cache) == []


def test_unknown_name_missing_file_and_unreachable_server(server, cache, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["download", "la-800lab", "--models-dir", str(models), "--base-url", server.url]) == 2
    assert "available: la-4lab" in capsys.readouterr().err
    server.files.clear()  # the mirror lacks the file
    assert main(["download", ENTRY, "--models-dir", str(models), "--base-url", server.url]) == 1
    assert "answered 404" in capsys.readouterr().err
    assert main(["download", ENTRY, "--models-dir", str(models), "--base-url", "http://127.0.0.1:9/none"]) == 1
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "import-reference" in err  # says how to do it by hand
    assert _leftovers(models, cache) == []


def test_an_existing_bundle_of_another_model_is_not_replaced(server, cache, tmp_path, capsys):
    models = tmp_path / "models"
    (models / f"{ENTRY}.lightunetr").mkdir(parents=True)
    (models / f"{ENTRY}.lightunetr" / "model_card.json").write_text("{}")
    assert main(["download", ENTRY, "--models-dir", str(models), "--base-url", server.url]) == 1
    assert "is not the catalog model" in capsys.readouterr().err
    assert (models / f"{ENTRY}.lightunetr" / "model_card.json").read_text() == "{}"


def test_cancel_stops_a_download_in_a_real_subprocess(server, cache, tmp_path):
    """As the Slicer module runs it: a subprocess with --cancel-file and JSON events; cancel → exit 3."""
    server.mode = "slow"
    models, cancel = tmp_path / "models", tmp_path / "cancel"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lightunetr_core", "download", ENTRY, "--models-dir", str(models),
                             "--base-url", server.url, "--events", "json", "--cancel-file", str(cancel)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.first_chunk_sent.wait(60), "the download never started"
        cancel.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    events = [json.loads(line) for line in (out + err).splitlines() if line.startswith("{")]
    assert any(e["event"] == "progress" and e.get("unit") == "byte" for e in events)
    assert any(e["event"] == "cancelled" for e in events)
    assert _leftovers(models, cache) == []


def test_list_describes_input_runtime_and_licence(capsys):
    assert main(["download", "--list"]) == 0
    text = capsys.readouterr().out
    for entry in load_catalog().values():
        assert entry.name in text
    assert "crop/ROI" in text and "licence: MIT" in text and "run time:" in text
    # every entry ships a measured CPU time (benchmarks/catalog_runtime.py --write) and says for what volume
    assert all(isinstance(e.runtime.get("cpu_s"), (int, float)) and e.runtime["cpu_s"] > 0 and e.runtime.get("volume")
               for e in load_catalog().values())
    assert "s on a CPU" in text
    assert main(["download", "--list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"la-4lab", "la-8lab", "pancreas-6lab", "pancreas-12lab", "brats-25lab"}
    assert all(d["url"].startswith("https://huggingface.co/jeffrey423/lightunetr-models/resolve/main/") for d in data.values())


# ------------------------------------------------------------------------------------------------ one-file bundle
@pytest.fixture
def tiny_bundle(tmp_path) -> Path:
    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.data.preprocessing import IntensityNormalization, PreprocessingPlan
    from lightunetr_core.models import build_model

    args = {"in_channels": 1, "num_classes": 2, "patch_size": [32, 32, 32]}
    plan = PreprocessingPlan(target_spacing=(1.0, 1.0, 1.0), normalization=[IntensityNormalization("zscore")])
    card = ModelCard(name="tiny", architecture="lightunetr", architecture_args=args, patch_size=[32, 32, 32],
                     preprocessing=plan.to_dict(), input_channels=["CT"], labels=default_labels(["background", "liver"]))
    return save_bundle(tmp_path / "src" / "tiny.lightunetr", build_model("lightunetr", **args), card)


def test_zip_round_trip(tiny_bundle, tmp_path):
    archive = tmp_path / "tiny.zip"
    assert main(["export-bundle", str(tiny_bundle), "-o", str(archive)]) == 0
    assert main(["export-bundle", str(tiny_bundle), "-o", str(archive)]) == 2  # exists
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["tiny.lightunetr/model.safetensors", "tiny.lightunetr/model_card.json"]
    out = extract_bundle_zip(archive, tmp_path / "library")
    assert out == tmp_path / "library" / "tiny.lightunetr"
    assert load_bundle(out).card.weights_sha256 == load_bundle(tiny_bundle).card.weights_sha256
    with pytest.raises(BundleError, match="already exists"):
        extract_bundle_zip(archive, tmp_path / "library")


def _rezip(src: Path, dst: Path, rename=None, extra=None, damage=False):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            if damage and info.filename.endswith("model.safetensors"):
                data = data[:-100] + bytes(100)
            out.writestr((rename or (lambda n: n))(info.filename), data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return dst


def test_zip_refuses_traversal_extra_members_and_changed_weights(tiny_bundle, tmp_path):
    archive = export_bundle_zip(tiny_bundle, tmp_path / "tiny.zip")
    library = tmp_path / "library"
    bad = {
        "traversal": _rezip(archive, tmp_path / "t.zip", rename=lambda n: "../" + n),
        "extra": _rezip(archive, tmp_path / "e.zip", extra={"tiny.lightunetr/run.py": b"print(1)"}),
        "not a bundle": _rezip(archive, tmp_path / "n.zip", rename=lambda n: n.replace("tiny.lightunetr", "tiny")),
        "changed weights": _rezip(archive, tmp_path / "w.zip", damage=True),
    }
    for why, path in bad.items():
        with pytest.raises(BundleError):
            extract_bundle_zip(path, library)
        assert _leftovers(library) == [], why
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BundleError, match="not a readable zip"):
        extract_bundle_zip(tmp_path / "junk.zip", library)
    # damage that only the zip's CRC sees
    raw = bytearray(archive.read_bytes())
    at = raw.find(b"model.safetensors") + 200
    raw[at:at + 50] = bytes(50)
    (tmp_path / "crc.zip").write_bytes(bytes(raw))
    with pytest.raises(BundleError):
        extract_bundle_zip(tmp_path / "crc.zip", library)
    assert _leftovers(library) == []


def test_catalog_runtime_benchmark_runs(tmp_path):
    """The benchmark that fills the catalog's run times, on one preset (so it cannot rot)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "catalog_runtime.py"
    out = subprocess.run([sys.executable, str(script), "--presets", "la", "--repeats", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["seconds"]) == {"la"} and result["seconds"]["la"] > 0
