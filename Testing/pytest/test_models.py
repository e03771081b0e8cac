"""Light-UNETR and Light-UNETR-L: equality with the authors' reference, size rules, attention, training."""

from __future__ import annotations

import pytest
import torch

from lightunetr_core.models import (
    LightUNETR,
    LightUNETRLarge,
    build_model,
    check_spatial_size,
    from_reference_state_dict,
    nearest_valid_sizes,
)
from lightunetr_core.models.blocks import LightUNETRBlock
from lightunetr_core.models.cost import measure_cost
from lightunetr_core.models.reference import reference_key_to_ours

FIXTURES = {
    "lightunetr": "reference_lightunetr_112x112x80.pt",
    "lightunetr_large": "reference_lightunetr_large_64x64x64.pt",
}


def _tolerance(reference: torch.Tensor) -> float:
    return 1e-4 * max(1.0, reference.abs().max().item())


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def reference_case(request, fixtures_dir):
    data = torch.load(fixtures_dir / FIXTURES[request.param], weights_only=True)
    model = from_reference_state_dict(
        data["state_dict"],
        variant=request.param,
        in_channels=data["meta"]["in_channels"],
        num_classes=data["meta"]["num_classes"],
        patch_size=data["meta"]["shape"],
    ).eval()
    return request.param, model, data


def test_reference_logits_and_attention_reproduced(reference_case):
    variant, model, data = reference_case
    with torch.no_grad():
        logits, attention = model(data["input"], return_attention=True)
    assert logits.shape == data["logits"].shape
    assert (logits - data["logits"]).abs().max().item() <= _tolerance(data["logits"])
    assert attention.shape == (1, 1, *data["input"].shape[2:])
    if data["attention"] is not None:
        assert (attention - data["attention"]).abs().max().item() <= _tolerance(data["attention"])


def test_fused_attention_path_equals_explicit_path(reference_case):
    _, model, data = reference_case
    with torch.no_grad():
        fused = model(data["input"])
        model.use_sdpa = False
        try:
            explicit = model(data["input"])
        finally:
            model.use_sdpa = True
    assert (fused - explicit).abs().max().item() <= _tolerance(explicit)
    assert (fused - data["logits"]).abs().max().item() <= _tolerance(data["logits"])


def test_parameter_counts_match_reference(reference_case):
    _, model, data = reference_case
    assert sum(p.numel() for p in model.parameters()) == data["meta"]["params"]


def test_parameter_counts_and_cost_of_paper_configurations():
    assert sum(p.numel() for p in LightUNETR(patch_size=(112, 112, 80)).parameters()) == 1_351_896
    assert sum(p.numel() for p in LightUNETR(patch_size=(96, 96, 96)).parameters()) == 1_349_880
    assert sum(p.numel() for p in LightUNETRLarge().parameters()) == 3_934_362
    cost = measure_cost(LightUNETR(), (1, 1, 112, 112, 80))
    assert cost.parameters == 1_351_896
    # fvcore counts 1.015 GMAC (it also counts GroupNorm); PyTorch's counter sees convs + matmuls.
    assert 0.95 < cost.gmacs < 1.05
    assert sum(cost.macs_by_module.values()) == cost.macs


def test_wrong_variant_or_patch_size_is_refused(fixtures_dir):
    data = torch.load(fixtures_dir / FIXTURES["lightunetr"], weights_only=True)
    with pytest.raises(ValueError, match="patch_size"):
        from_reference_state_dict(data["state_dict"], "lightunetr", patch_size=(96, 96, 96))
    with pytest.raises(ValueError, match="patch_size is required"):
        from_reference_state_dict(data["state_dict"], "lightunetr")
    with pytest.raises(ValueError, match="does not look like"):
        from_reference_state_dict(data["state_dict"], "lightunetr_large")
    with pytest.raises(ValueError, match="has 2 classes, but num_classes=3"):
        from_reference_state_dict(data["state_dict"], "lightunetr", num_classes=3, patch_size=(112, 112, 80))
    with pytest.raises(ValueError, match="unknown variant"):
        from_reference_state_dict(data["state_dict"], "unet")


def test_data_parallel_prefix_is_accepted(fixtures_dir):
    data = torch.load(fixtures_dir / FIXTURES["lightunetr_large"], weights_only=True)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in data["state_dict"].items()}}
    model = from_reference_state_dict(wrapped, "lightunetr_large").eval()
    with torch.no_grad():
        assert (model(data["input"]) - data["logits"]).abs().max() <= _tolerance(data["logits"])


def test_key_map_examples():
    assert reference_key_to_ours("Encoder.block1.0.lidr2.high_freq3.3.weight", "lightunetr") == (
        "encoder_stages.0.0.attention2.high_freq_large.3.weight"
    )
    assert reference_key_to_ours("Decoder.TSconv1.se.fc.2.weight", "lightunetr") == "upsamplers.2.se.excite.weight"
    assert reference_key_to_ours("up_3.conv_block.4.bias", "lightunetr_large") == "upsamplers.3.branch.project.bias"


@pytest.mark.parametrize("size", [(32, 32, 32), (48, 32, 64), (112, 112, 80), (80, 80, 48)])
def test_every_multiple_of_16_runs(size):
    model = LightUNETR(patch_size=size).eval()
    with torch.no_grad():
        logits, attention = model(torch.randn(1, 1, *size), return_attention=True)
    assert logits.shape == (1, 2, *size)
    assert attention.shape == (1, 1, *size)


@pytest.mark.parametrize("size", [(100, 112, 80), (112, 112, 8), (0, 16, 16)])
def test_invalid_sizes_name_the_nearest_valid_ones(size):
    with pytest.raises(ValueError, match="multiple of 16") as info:
        check_spatial_size(size)
    if size[0] == 100:
        assert "96 or 112" in str(info.value)
    with pytest.raises(ValueError, match="multiple of 16"):
        LightUNETR(patch_size=size)
    assert nearest_valid_sizes(100) == (96, 112)


def test_input_must_match_patch_size_and_channels():
    model = LightUNETR(patch_size=(32, 32, 32))
    with pytest.raises(ValueError, match="patch size"):
        model(torch.zeros(1, 1, 64, 64, 64))
    with pytest.raises(ValueError, match="input channel"):
        model(torch.zeros(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="multiple of 16"):
        LightUNETRLarge()(torch.zeros(1, 1, 40, 32, 32))


def test_attention_map_is_a_distribution_over_tokens():
    torch.manual_seed(0)
    block = LightUNETRBlock(24, heads=1, reduction=4).eval()
    x = torch.randn(2, 24, 16, 16, 12)
    with torch.no_grad():
        _, tokens = block(x, return_attention=True)
    assert tokens.shape == (2, 4 * 4 * 3)
    assert torch.all(tokens >= 0)
    torch.testing.assert_close(tokens.sum(dim=1), torch.ones(2))


def test_volume_attention_is_the_resized_token_map():
    torch.manual_seed(0)
    model = LightUNETR(patch_size=(64, 64, 32)).eval()
    with torch.no_grad():
        _, attention = model(torch.randn(2, 1, 64, 64, 32), return_attention=True)
    # 1/16 token grid 4×4×2, so mean attention per token 1/32; corners of an aligned resize are tokens.
    assert attention.shape == (2, 1, 64, 64, 32)
    assert torch.all(attention >= 0) and torch.all(attention <= 1)
    assert 0.5 / 32 < attention.mean().item() < 2.0 / 32


@pytest.mark.parametrize("architecture", ["lightunetr", "lightunetr_large"])
def test_gradients_reach_every_parameter(architecture):
    torch.manual_seed(0)
    kwargs = {"in_channels": 2, "num_classes": 3}
    if architecture == "lightunetr":
        kwargs["patch_size"] = (32, 32, 32)
    model = build_model(architecture, **kwargs).train()
    logits, attention = model(torch.randn(2, 2, 32, 32, 32), return_attention=True)
    assert logits.shape == (2, 3, 32, 32, 32)
    assert not attention.requires_grad
    logits.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_batch_elements_are_independent_in_eval():
    torch.manual_seed(0)
    model = LightUNETR(in_channels=1, num_classes=4, patch_size=(32, 32, 48)).eval()
    x = torch.randn(3, 1, 32, 32, 48)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 4, 32, 32, 48)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_seeded_construction_and_training_step_are_deterministic():
    def one_step() -> torch.Tensor:
        torch.manual_seed(123)
        model = LightUNETR(patch_size=(32, 32, 32))
        optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(2, 1, 32, 32, 32)
        model(x).mean().backward()
        optimiser.step()
        with torch.no_grad():
            return model.eval()(x)

    torch.testing.assert_close(one_step(), one_step(), rtol=0, atol=0)
