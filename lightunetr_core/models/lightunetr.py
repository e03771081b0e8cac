"""Light-UNETR, the lightweight transformer U-Net of the paper as used for semi-supervised training
(code_cse/networks/lightunetr.py of the authors' repository CUHK-AIM-Group/Light-UNETR). Layout ``(B, C, X, Y, Z)``; logits are raw (apply softmax yourself)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightunetr_core.models.blocks import LightUNETRBlock, SqueezeExcitation
from lightunetr_core.models.size_rules import (
    bottleneck_tokens,
    check_spatial_size,
    crop_to,
    pad_odd_axes,
)

__all__ = ["LightUNETR", "PatchEmbedding", "Downsample", "Upsample"]


class PatchEmbedding(nn.Module):
    """Overlapping patch embedding to 1/4 resolution: two stride-2 conv/GN/GELU stages and a k3 conv/GN.

    Channels go ``in → C/4 → C/2 → C``.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        quarter, half = channels // 4, channels // 2
        self.conv1 = nn.Conv3d(in_channels, quarter, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(1, quarter)
        self.conv2 = nn.Conv3d(quarter, half, 3, stride=2, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(1, half)
        self.conv3 = nn.Conv3d(half, channels, 3, stride=1, padding=1, bias=False)
        self.norm3 = nn.GroupNorm(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.conv1(x)))
        x = F.gelu(self.norm2(self.conv2(x)))
        return self.norm3(self.conv3(x))


class Downsample(nn.Module):
    """Conv k2 s2 → GroupNorm(1) → squeeze-excitation."""

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 2, stride=2)
        self.norm = nn.GroupNorm(1, out_channels)
        self.se = SqueezeExcitation(out_channels, se_reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.norm(self.conv(x)))


class Upsample(nn.Module):
    """Transposed conv k2 s2 → GroupNorm(1) → squeeze-excitation."""

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 16) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2)
        self.norm = nn.GroupNorm(1, out_channels)
        self.se = SqueezeExcitation(out_channels, se_reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.norm(self.conv(x)))


def _stage(channels: int, depth: int, heads: int, reduction: int, kernels, mlp_ratio: int) -> nn.ModuleList:
    return nn.ModuleList(LightUNETRBlock(channels, heads, reduction, kernels, mlp_ratio) for _ in range(depth))


class LightUNETR(nn.Module):
    """Light-UNETR (Liu et al.), defaults = the paper's semi-supervised configuration.

    Args:
        in_channels: input channels (modalities).
        num_classes: output classes, background included.
        patch_size: training patch (X, Y, Z); fixes the position-embedding length
            ``Π ceil(axis/32)``, so the model runs on inputs of exactly this size.
        channels: stage channels C1..C4 (each divisible by 6, and by 3·heads).
        depths: blocks per stage (encoder; the decoder mirrors it).
        heads: attention heads per stage.
        reductions: LIDR spatial reduction r per stage.
        high_freq_kernels: kernels of the two LIDR convolution branches.
        mlp_ratio: CGLU hidden width / C.
        se_reduction: squeeze-excitation ratio.
        dropout: dropout on the bottleneck tokens.

    ``forward(x, return_attention=False)`` returns logits ``(B, num_classes, X, Y, Z)``, or
    ``(logits, attention)`` with the attention map of the last decoder block, ``(B, 1, X, Y, Z)``,
    used by Attention-Guided Replacement. Without the map, attention runs through PyTorch's fused
    ``scaled_dot_product_attention`` (same result; ``use_sdpa=False`` forces the explicit path).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        patch_size: Sequence[int] = (112, 112, 80),
        channels: Sequence[int] = (24, 48, 60, 96),
        depths: Sequence[int] = (1, 2, 3, 2),
        heads: Sequence[int] = (1, 2, 4, 4),
        reductions: Sequence[int] = (4, 2, 2, 1),
        high_freq_kernels: Sequence[int] = (3, 5),
        mlp_ratio: int = 2,
        se_reduction: int = 16,
        dropout: float = 0.3,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if not (len(channels) == len(depths) == len(heads) == len(reductions) == 4):
            raise ValueError("channels, depths, heads and reductions need one value per stage (4 stages)")
        check_spatial_size(patch_size)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = tuple(int(s) for s in patch_size)
        self.use_sdpa = use_sdpa
        kernels = tuple(high_freq_kernels)
        self.patch_embedding = PatchEmbedding(in_channels, channels[0])
        self.downsamplers = nn.ModuleList(
            Downsample(channels[i], channels[i + 1], se_reduction) for i in range(3)
        )
        self.encoder_stages = nn.ModuleList(
            _stage(channels[i], depths[i], heads[i], reductions[i], kernels, mlp_ratio) for i in range(4)
        )
        self.position_embedding = nn.Parameter(torch.zeros(1, bottleneck_tokens(patch_size), channels[3]))
        self.token_dropout = nn.Dropout(dropout)
        self.decoder_stages = nn.ModuleList(
            _stage(channels[i], depths[i], heads[i], reductions[i], kernels, mlp_ratio) for i in range(4)
        )
        # upsamplers[i] goes from stage i+1 to stage i.
        self.upsamplers = nn.ModuleList(Upsample(channels[i + 1], channels[i], se_reduction) for i in range(3))
        self.head = nn.ConvTranspose3d(channels[0], num_classes, 4, stride=4)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, X, Y, Z) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"model expects {self.in_channels} input channel(s), got {x.shape[1]}")
        check_spatial_size(x.shape[2:])
        if bottleneck_tokens(x.shape[2:]) != self.position_embedding.shape[1]:
            raise ValueError(
                f"input size {tuple(x.shape[2:])} does not match the model's patch size {self.patch_size}: "
                "the position embedding ties the model to its patch size; use sliding-window inference "
                "with that patch size."
            )

    def _run_stage(self, stage: nn.ModuleList, x: torch.Tensor, attention_last: bool = False):
        attention = None
        for index, block in enumerate(stage):
            want = attention_last and index == len(stage) - 1
            x, attention = block(x, return_attention=want, use_sdpa=self.use_sdpa)
        return x, attention

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        self.check_input(x)
        input_size = x.shape[2:]
        x = self.patch_embedding(x)
        skip1, _ = self._run_stage(self.encoder_stages[0], x)
        skip2, _ = self._run_stage(self.encoder_stages[1], self.downsamplers[0](skip1))
        x, grid16 = pad_odd_axes(self.downsamplers[1](skip2))
        skip3, _ = self._run_stage(self.encoder_stages[2], x)
        x, _ = self._run_stage(self.encoder_stages[3], self.downsamplers[2](skip3))

        batch, channels, *grid = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.position_embedding
        # The reference reshapes the (B, N, C) tokens straight to (B, C, X, Y, Z) without transposing
        # back, which interleaves tokens and channels. Every trained checkpoint depends on that layout,
        # so we keep it (the fixture test fails by ~0.07 in the logits with a clean transpose).
        x = self.token_dropout(tokens).reshape(batch, channels, *grid)

        x, _ = self._run_stage(self.decoder_stages[3], x)
        x, _ = self._run_stage(self.decoder_stages[2], self.upsamplers[2](x) + skip3)
        x = crop_to(x, grid16)
        x, _ = self._run_stage(self.decoder_stages[1], self.upsamplers[1](x) + skip2)
        x, attention = self._run_stage(self.decoder_stages[0], self.upsamplers[0](x) + skip1, return_attention)
        logits = self.head(x)
        if not return_attention:
            return logits
        return logits, attention_to_volume(attention, x.shape[2:], self.decoder_stages[0][-1].reduction, input_size)


def attention_to_volume(
    attention: torch.Tensor, feature_grid: Sequence[int], reduction: int, input_size: Sequence[int]
) -> torch.Tensor:
    """Reshape a per-token map (B, N) to its reduced grid and resize it (trilinear, corners aligned)
    to the input's own spatial size → (B, 1, X, Y, Z)."""
    reduced = [-(-int(s) // reduction) for s in feature_grid]
    volume = attention.reshape(attention.shape[0], 1, *reduced)
    return F.interpolate(volume, size=tuple(int(s) for s in input_size), mode="trilinear", align_corners=True)
