"""Loading the authors' checkpoints (CUHK-AIM-Group/Light-UNETR) into our networks.

The reference state dicts use the reference's module names (code_cse/networks/lightunetr.py); our modules have names that
say what they are. The maps below translate one into the other; shapes are identical.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lightunetr_core.models.lightunetr import LightUNETR
from lightunetr_core.models.lightunetr_large import LightUNETRLarge
from lightunetr_core.models.size_rules import bottleneck_tokens

__all__ = ["from_reference_state_dict", "reference_key_to_ours", "VARIANTS"]

VARIANTS = ("lightunetr", "lightunetr_large")

# Names inside a Light-UNETR block, shared by both networks.
_BLOCK_RULES: list[tuple[str, str]] = [
    (r"\.conv0\.", ".depthwise."),
    (r"\.lidr([12])\.qkv\.", r".attention\1.qkv."),
    (r"\.lidr([12])\.high_freq\.", r".attention\1.high_freq_small."),
    (r"\.lidr([12])\.high_freq3\.", r".attention\1.high_freq_large."),
    (r"\.rec([12])\.block\.0\.", r".recover\1.upsample."),
    (r"\.rec([12])\.block\.1\.", r".recover\1.norm."),
    (r"\.rec([12])\.block\.2\.", r".recover\1.project."),
    (r"\.cglu([12])\.gating\.", r".cglu\1.gate."),
]

_SE_RULES: list[tuple[str, str]] = [(r"\.se\.fc\.0\.", ".se.squeeze."), (r"\.se\.fc\.2\.", ".se.excite.")]

_LIGHTUNETR_RULES: list[tuple[str, str]] = [
    (r"^Encoder\.position_embeddings$", "position_embedding"),
    (r"^Encoder\.DWconv1\.proj([123])\.", r"patch_embedding.conv\1."),
    (r"^Encoder\.DWconv1\.norm([123])\.", r"patch_embedding.norm\1."),
    (r"^Encoder\.DWconv([234])\.depth_wise\.", lambda m: f"downsamplers.{int(m.group(1)) - 2}.conv."),
    (r"^Encoder\.DWconv([234])\.", lambda m: f"downsamplers.{int(m.group(1)) - 2}."),
    (r"^Encoder\.block([1234])\.", lambda m: f"encoder_stages.{int(m.group(1)) - 1}."),
    (r"^Decoder\.block([1234])\.", lambda m: f"decoder_stages.{int(m.group(1)) - 1}."),
    (r"^Decoder\.TSconv([123])\.transposed\.", lambda m: f"upsamplers.{3 - int(m.group(1))}.conv."),
    (r"^Decoder\.TSconv([123])\.", lambda m: f"upsamplers.{3 - int(m.group(1))}."),
    (r"^Decoder\.SegHead\.", "head."),
] + _SE_RULES + _BLOCK_RULES

_LARGE_RULES: list[tuple[str, str]] = [
    (r"^enc_block_(\d)\.", r"encoder_stages.\1."),
    (r"^dec_block_(\d)\.", r"decoder_stages.\1."),
    (r"^down_(\d)\.", r"downsamplers.\1."),
    (r"^up_(\d)\.", r"upsamplers.\1."),
    (r"^out_0\.", "head."),
    (r"\.conv_block\.0\.", ".branch.depthwise."),
    (r"\.conv_block\.1\.", ".branch.norm."),
    (r"\.conv_block\.2\.", ".branch.expand."),
    (r"\.conv_block\.4\.", ".branch.project."),
    (r"\.res_conv\.", ".shortcut."),
] + _BLOCK_RULES


def reference_key_to_ours(key: str, variant: str) -> str:
    """Translate one reference parameter name into ours."""
    rules = _LIGHTUNETR_RULES if variant == "lightunetr" else _LARGE_RULES
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept ``{"state_dict": ...}``/``{"model": ...}`` wrappers and DataParallel ``module.`` prefixes."""
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def from_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    variant: str = "lightunetr",
    in_channels: int | None = None,
    num_classes: int | None = None,
    patch_size: Sequence[int] | None = None,
) -> nn.Module:
    """Build our network carrying the weights of an authors' checkpoint.

    Args:
        state_dict: the reference ``state_dict`` (e.g. ``torch.load(path, weights_only=True)``).
        variant: ``"lightunetr"`` or ``"lightunetr_large"``.
        in_channels / num_classes: checked against the weights; read from them when omitted.
        patch_size: training patch (X, Y, Z); required for ``"lightunetr"`` (the position embedding
            length must equal ``Π ceil(axis/32)``), ignored by Light-UNETR-L.

    Raises:
        ValueError: unknown variant, shape/size mismatches, missing or unexpected weights.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    reference = _strip_wrappers(state_dict)
    ours = {reference_key_to_ours(k, variant): v for k, v in reference.items()}

    if variant == "lightunetr":
        stem_key, head_key, head_axis = "patch_embedding.conv1.weight", "head.weight", 1
    else:
        stem_key, head_key, head_axis = "stem.weight", "head.weight", 1
    for key in (stem_key, head_key):
        if key not in ours:
            raise ValueError(
                f"this does not look like a reference {variant} checkpoint: weight for {key!r} not found "
                f"(first keys: {list(reference)[:3]}). Check the variant."
            )
    found_in, found_classes = ours[stem_key].shape[1], ours[head_key].shape[head_axis]
    if in_channels is not None and in_channels != found_in:
        raise ValueError(f"checkpoint has {found_in} input channel(s), but in_channels={in_channels} was given")
    if num_classes is not None and num_classes != found_classes:
        raise ValueError(f"checkpoint has {found_classes} classes, but num_classes={num_classes} was given")

    if variant == "lightunetr":
        tokens = ours["position_embedding"].shape[1]
        if patch_size is None:
            raise ValueError(
                f"patch_size is required for Light-UNETR (the checkpoint's position embedding has {tokens} "
                "tokens = Π ceil(axis/32); e.g. (112, 112, 80) for LA, (96, 96, 96) for Pancreas/BraTS)"
            )
        if bottleneck_tokens(patch_size) != tokens:
            raise ValueError(
                f"patch_size {tuple(patch_size)} gives {bottleneck_tokens(patch_size)} bottleneck tokens, "
                f"but the checkpoint's position embedding has {tokens}; use the patch size it was trained with"
            )
        model: nn.Module = LightUNETR(found_in, found_classes, patch_size=patch_size)
    else:
        model = LightUNETRLarge(found_in, found_classes)

    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match {variant}: {len(missing)} missing weights (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for key, tensor in ours.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"weight {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}: "
                "the checkpoint was built with another configuration"
            )
    model.load_state_dict(ours, strict=True)
    return model
