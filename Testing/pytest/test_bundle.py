"""Model bundles: round trip, refusal of corrupted/newer/pickled bundles, import of reference checkpoints."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from lightunetr_core.bundle import (
    CARD_FILE,
    WEIGHTS_FILE,
    BundleError,
    ModelCard,
    default_labels,
    load_bundle,
    read_model_card,
    save_bundle,
    sha256_file,
)
from lightunetr_core.data.preprocessing import IntensityNormalization, PreprocessingPlan
from lightunetr_core.models import LightUNETR, LightUNETRLarge

PATCH = (32, 32, 32)


def tiny_card(num_classes: int = 3, **changes) -> ModelCard:
    fields = dict(
        name="tiny",
        description="test model",
        architecture="lightunetr",
        architecture_args={"in_channels": 1, "num_classes": num_classes, "patch_size": list(PATCH)},
        patch_size=list(PATCH),
        preprocessing=PreprocessingPlan(target_spacing=(1.0, 1.0, 1.0),
                                        normalization=[IntensityNormalization("zscore")]).to_dict(),
        input_channels=["MR"],
        labels=default_labels(["background", "liver", "spleen"][:num_classes]),
        provenance={"recipe": "test", "labeled": 2, "unlabeled": 4, "iterations": 10},
    )
    fields.update(changes)
    return ModelCard(**fields)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return LightUNETR(1, 3, patch_size=PATCH).eval()


@pytest.fixture
def saved(tmp_path, tiny_model):
    return save_bundle(tmp_path / "tiny", tiny_model, tiny_card())


class CodeRan:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_round_trip(saved, tiny_model, tmp_path):
    assert saved.name == "tiny.lightunetr" and sorted(p.name for p in saved.iterdir()) == [WEIGHTS_FILE, CARD_FILE]
    text = (saved / CARD_FILE).read_text()
    assert text.startswith("{\n  ") and '"labels": [\n' in text  # indented, readable by a person
    card = json.loads(text)
    assert card["format_version"] == 1 and card["weights_sha256"] == sha256_file(saved / WEIGHTS_FILE)
    assert card["provenance"]["code_version"] and card["provenance"]["date"]
    loaded = load_bundle(saved)
    assert not loaded.model.training and loaded.card.label_names == ["background", "liver", "spleen"]
    assert loaded.card.plan.target_spacing == (1.0, 1.0, 1.0)
    assert loaded.card == read_model_card(saved)
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), tiny_model(x))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_round_trip_large_variant(tmp_path):
    torch.manual_seed(1)
    model = LightUNETRLarge(2, 2, channels=(12, 24, 36, 48, 60)).eval()
    card = tiny_card(
        2, architecture="lightunetr_large",
        architecture_args={"in_channels": 2, "num_classes": 2, "channels": [12, 24, 36, 48, 60]},
        input_channels=["T1", "FLAIR"],
        preprocessing=PreprocessingPlan(normalization=[IntensityNormalization("zscore", nonzero=True)] * 2).to_dict())
    path = save_bundle(tmp_path / "large.lightunetr", model, card)
    loaded = load_bundle(path)
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_save_refuses_existing_and_mismatched_card(tmp_path, tiny_model, saved):
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(saved, tiny_model, tiny_card())
    save_bundle(saved, tiny_model, tiny_card(description="new"), overwrite=True)
    assert read_model_card(saved).description == "new"
    with pytest.raises(BundleError, match="labels"):
        save_bundle(tmp_path / "two", tiny_model, tiny_card(labels=default_labels(["background", "liver"])))
    wrong_args = tiny_card(architecture_args={"in_channels": 1, "num_classes": 3, "patch_size": [64, 64, 64]},
                           patch_size=[64, 64, 64])
    with pytest.raises(BundleError, match="does not match"):
        save_bundle(tmp_path / "wrong", tiny_model, wrong_args)
    # The patch is one fact: a card whose network grid and window differ is refused before anything is written.
    two_patches = tiny_card(architecture_args={"in_channels": 1, "num_classes": 3, "patch_size": [64, 64, 64]})
    with pytest.raises(BundleError, match="must be the same"):
        save_bundle(tmp_path / "wrong", tiny_model, two_patches)
    assert not (tmp_path / "two.lightunetr").exists() and not (tmp_path / "wrong.lightunetr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_corrupted_weights_refused(saved):
    weights = saved / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256.*corrupted"):
        load_bundle(saved)


def test_newer_format_version_refused(saved):
    card = json.loads((saved / CARD_FILE).read_text())
    card["format_version"] = 2
    (saved / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="newer.*Update lightunetr"):
        load_bundle(saved)


def test_damaged_card_and_missing_files(saved, tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nothing.lightunetr")
    (saved / CARD_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(saved)
    os.remove(saved / CARD_FILE)
    with pytest.raises(BundleError, match="not a LightUNETR bundle"):
        load_bundle(saved)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_with_code_is_never_unpickled(saved, tmp_path, writer):
    marker = tmp_path / "code_ran"
    payload = {"weights": CodeRan(marker)}
    weights = saved / WEIGHTS_FILE
    with open(weights, "wb") as f:
        if writer == "pickle":
            pickle.dump(payload, f)
        else:
            torch.save(payload, f)
    # Even with a matching hash in the card, the pickle is refused.
    card = json.loads((saved / CARD_FILE).read_text())
    card["weights_sha256"] = sha256_file(weights)
    (saved / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(saved)
    # A checkpoint passed where a bundle is expected is refused too.
    checkpoint = tmp_path / "model.pth"
    torch.save(payload, checkpoint)
    with pytest.raises(BundleError, match="import-reference"):
        load_bundle(checkpoint)
    assert not marker.exists()


def test_import_reference_reproduces_reference_logits(fixtures_dir, tmp_path):
    from lightunetr_core.cli import main

    reference = torch.load(fixtures_dir / "reference_lightunetr_112x112x80.pt", weights_only=True)
    checkpoint = tmp_path / "la_best.pth"
    torch.save(reference["state_dict"], checkpoint)
    out = tmp_path / "la.lightunetr"
    rc = main(["import-reference", str(checkpoint), "--variant", "lightunetr", "--patch-size", "112", "112", "80",
               "--spacing", "0.625", "0.625", "0.625", "--normalization", "zscore", "--modality", "MR",
               "--labels", "background", "left-atrium", "-o", str(out)])
    assert rc == 0
    loaded = load_bundle(out)
    card = loaded.card
    assert card.patch_size == [112, 112, 80] and card.label_names == ["background", "left-atrium"]
    # the card carries the structure's SNOMED CT code (one terminology table: lightunetr_core/terminology.py)
    assert "SCT^82471001^Left atrium" in card.labels[1]["terminology"] and "terminology" not in card.labels[0]
    assert card.plan.target_spacing == (0.625, 0.625, 0.625) and card.plan.normalization[0].kind == "zscore"
    with torch.no_grad():
        logits = loaded.model(reference["input"].float())
    expected = reference["logits"]
    assert (logits - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    # Existing output refused, presets fill the released models' settings.
    assert main(["import-reference", str(checkpoint), "--preset", "la", "-o", str(out)]) == 2
    assert main(["import-reference", str(checkpoint), "--preset", "pancreas", "--patch-size", "112", "112", "80",
                 "-o", str(tmp_path / "p.lightunetr")]) == 0
    plan = read_model_card(tmp_path / "p.lightunetr").plan
    assert plan.normalization[0].kind == "ct" and plan.normalization[0].window == (-125.0, 275.0)


def test_import_reference_refuses_code_pickle(tmp_path):
    from lightunetr_core.cli import main

    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "evil.pth"
    torch.save({"state_dict": CodeRan(marker)}, checkpoint)
    rc = main(["import-reference", str(checkpoint), "--preset", "la", "-o", str(tmp_path / "x.lightunetr")])
    assert rc == 2 and not marker.exists() and not (tmp_path / "x.lightunetr").exists()
