"""ONNX export (lightunetr_core.export.onnx and ``lightunetr export-onnx``), checked with real ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'lightunetr-core[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'lightunetr-core[onnx]'")

from lightunetr_core.export.onnx import OnnxExportError, export_onnx  # noqa: E402
from lightunetr_core.models import LightUNETR, LightUNETRLarge  # noqa: E402

PATCH = (32, 32, 32)
# Small but complete networks (every block type, both attention paths) keep tracing fast on 2 cores.
TINY = dict(channels=(12, 24, 36, 48), depths=(1, 1, 1, 1), heads=(1, 2, 2, 4), se_reduction=4)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = LightUNETR(in_channels=1, num_classes=3, patch_size=PATCH, **TINY).eval()
    # Non-trivial position embedding and BatchNorm statistics, so the export must carry them.
    with torch.no_grad():
        model.position_embedding.normal_(0, 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    path = folder / "model.onnx"
    report = export_onnx(small_model, path, (1, 1, *PATCH), metadata={"note": "test"})
    return path, report


def test_export_matches_pytorch_with_dynamic_batch(small_model, exported):
    path, report = exported
    assert path.is_file() and report.max_abs_diff <= report.tolerance
    assert report.output_shape == [1, 3, *PATCH]
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["note"] == "test" and json.loads(meta["lightunetr_input_shape"]) == [1, 1, *PATCH]
    # Independent check on a new batch of two (dynamic batch axis), with a different seed.
    x = torch.randn(2, 1, *PATCH, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = small_model(x).numpy()
    got = _session(path).run(["logits"], {"image": x.numpy()})[0]
    assert got.shape == (2, 3, *PATCH)
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temporary left behind


def test_explicit_attention_path_exports_the_same_function(small_model, exported, tmp_path):
    explicit = LightUNETR(in_channels=1, num_classes=3, patch_size=PATCH, use_sdpa=False, **TINY).eval()
    explicit.load_state_dict(small_model.state_dict())
    a, b = exported[0], tmp_path / "explicit.onnx"
    export_onnx(explicit, b, (1, 1, *PATCH))
    x = np.random.default_rng(1).standard_normal((1, 1, *PATCH)).astype(np.float32)
    out_a = _session(a).run(None, {"image": x})[0]
    out_b = _session(b).run(None, {"image": x})[0]
    assert np.abs(out_a - out_b).max() <= 1e-4 * max(1.0, np.abs(out_a).max())


def test_large_model_exports(tmp_path):
    torch.manual_seed(1)
    model = LightUNETRLarge(in_channels=2, num_classes=2, channels=(8, 12, 24, 36, 48), blocks_per_level=1).eval()
    report = export_onnx(model, tmp_path / "large.onnx", (2, 32, 32, 32))  # (C, X, Y, Z): batch 1 added
    assert report.input_shape == [1, 2, 32, 32, 32] and report.max_abs_diff <= report.tolerance


def test_mismatch_is_detected_and_nothing_is_written(tmp_path):
    # A tolerance of zero cannot be met by float32 convolutions whose summation order differs between
    # PyTorch and ONNX Runtime: the comparison must really run, reject the graph and write nothing.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 16, 3, padding=1), torch.nn.GroupNorm(1, 16), torch.nn.GELU(),
                                torch.nn.Conv3d(16, 3, 3, padding=1))
    path = tmp_path / "strict.onnx"
    with pytest.raises(OnnxExportError, match="differs from PyTorch"):
        export_onnx(model, path, (1, 1, 16, 16, 16), rtol=0.0)
    assert not path.exists() and not list(tmp_path.iterdir())
    report = export_onnx(model, path, (1, 1, 16, 16, 16))  # the default tolerance accepts it
    assert 0.0 < report.max_abs_diff <= report.tolerance and path.is_file()


def test_refuses_to_overwrite(small_model, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        export_onnx(small_model, path, (1, 1, *PATCH))
    assert path.read_bytes() == b"keep"


def _make_bundle(tmp_path, model):
    from lightunetr_core.bundle import ModelCard, default_labels, save_bundle
    from lightunetr_core.data.preprocessing import IntensityNormalization, PreprocessingPlan

    card = ModelCard(
        name="tiny",
        architecture="lightunetr",
        architecture_args={"in_channels": 1, "num_classes": 3, "patch_size": list(PATCH),
                           **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}},
        patch_size=list(PATCH),
        preprocessing=PreprocessingPlan(target_spacing=(1.5, 1.5, 2.0),
                                        normalization=[IntensityNormalization(kind="ct")]).to_dict(),
        input_channels=["CT"],
        labels=default_labels(["background", "liver", "tumour"]),
    )
    return save_bundle(tmp_path / "tiny", model, card)


def test_cli_exports_bundle_with_card_metadata(small_model, tmp_path):
    bundle = _make_bundle(tmp_path, small_model)
    out = tmp_path / "out" / "tiny.onnx"
    cmd = [sys.executable, "-m", "lightunetr_core", "export-onnx", str(bundle), "-o", str(out), "--events", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    finished = events[-1]
    assert finished["event"] == "finished" and finished["max_abs_diff"] <= finished["tolerance"]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    card = json.loads(meta["lightunetr_model_card"])
    assert [lb["name"] for lb in card["labels"]] == ["background", "liver", "tumour"]
    assert card["preprocessing"]["target_spacing"] == [1.5, 1.5, 2.0]
    # Same logits as the bundle's model.
    x = torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = small_model(x).numpy()
    got = _session(out).run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    # Second run without --overwrite: bad input, file untouched.
    before = out.stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stdout
    assert out.stat().st_mtime_ns == before


def test_cli_rejects_pickle_checkpoint(tmp_path):
    checkpoint = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1)}, checkpoint)
    proc = subprocess.run([sys.executable, "-m", "lightunetr_core", "export-onnx", str(checkpoint), "-o", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pickle" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
