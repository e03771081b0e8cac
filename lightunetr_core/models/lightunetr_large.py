"""Light-UNETR-L: a MedNeXt-style 5-level U-Net whose 1/4, 1/8 and 1/16 levels use Light-UNETR
blocks (code_cse/networks/lightunetr_large.py of the authors' repository). Layout ``(B, C, X, Y, Z)``; logits are raw."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightunetr_core.models.blocks import (
    LightUNETRBlock,
    ResidualConvBlock,
    ResidualDownBlock,
    ResidualUpBlock,
)
from lightunetr_core.models.lightunetr import attention_to_volume
from lightunetr_core.models.size_rules import check_spatial_size, crop_to, pad_odd_axes

__all__ = ["LightUNETRLarge"]


class LightUNETRLarge(nn.Module):
    """Light-UNETR-L (Liu et al.), defaults = the reference configuration.

    Args:
        in_channels: input channels.
        num_classes: output classes, background included.
        channels: channels of the five levels (1×, 1/2, 1/4, 1/8, 1/16).
        blocks_per_level: blocks at each level, encoder and decoder alike.
        encoder_heads / encoder_reductions: LIDR heads and r at levels 1/4, 1/8, 1/16 (encoder + bottleneck).
        decoder_heads / decoder_reductions: the same for the decoder's 1/8 and 1/4 levels (the
            reference uses r = 2 at the decoder's 1/4 level: 4× more tokens than the encoder).
        expansion: MedNeXt expansion ratio of the conv blocks.
        high_freq_kernels, mlp_ratio: as in :class:`~lightunetr_core.models.LightUNETR`.

    Accepts any input whose axes are multiples of 16 (no position embedding). ``forward(x,
    return_attention=True)`` also returns the attention map of the decoder's 1/4-level last LIDR
    resized to the input size, so CSE can train this model (the reference cannot).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = (32, 60, 96, 150, 198),
        blocks_per_level: int = 2,
        encoder_heads: Sequence[int] = (1, 2, 2),
        encoder_reductions: Sequence[int] = (4, 2, 2),
        decoder_heads: Sequence[int] = (2, 1),
        decoder_reductions: Sequence[int] = (2, 2),
        expansion: int = 2,
        high_freq_kernels: Sequence[int] = (3, 5),
        mlp_ratio: int = 2,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if len(channels) != 5:
            raise ValueError("LightUNETRLarge needs five level channels")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.use_sdpa = use_sdpa
        kernels = tuple(high_freq_kernels)
        c = list(channels)
        n = blocks_per_level

        def light_stage(ch: int, heads: int, r: int) -> nn.ModuleList:
            return nn.ModuleList(LightUNETRBlock(ch, heads, r, kernels, mlp_ratio) for _ in range(n))

        def conv_stage(ch: int) -> nn.ModuleList:
            return nn.ModuleList(ResidualConvBlock(ch, expansion) for _ in range(n))

        self.stem = nn.Conv3d(in_channels, c[0], 1)
        self.encoder_stages = nn.ModuleList(
            [
                conv_stage(c[0]),
                conv_stage(c[1]),
                light_stage(c[2], encoder_heads[0], encoder_reductions[0]),
                light_stage(c[3], encoder_heads[1], encoder_reductions[1]),
            ]
        )
        self.downsamplers = nn.ModuleList(ResidualDownBlock(c[i], c[i + 1], expansion) for i in range(4))
        self.bottleneck = light_stage(c[4], encoder_heads[2], encoder_reductions[2])
        # upsamplers[i] and decoder_stages[i] work at level i (0 = full resolution).
        self.upsamplers = nn.ModuleList(ResidualUpBlock(c[i + 1], c[i], expansion) for i in range(4))
        self.decoder_stages = nn.ModuleList(
            [
                conv_stage(c[0]),
                conv_stage(c[1]),
                light_stage(c[2], decoder_heads[1], decoder_reductions[1]),
                light_stage(c[3], decoder_heads[0], decoder_reductions[0]),
            ]
        )
        # A 1×1 transposed conv (reference layout of the weight: in, out).
        self.head = nn.ConvTranspose3d(c[0], num_classes, 1)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, X, Y, Z) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"model expects {self.in_channels} input channel(s), got {x.shape[1]}")
        check_spatial_size(x.shape[2:])

    def _run_stage(self, stage: nn.ModuleList, x: torch.Tensor, attention_last: bool = False):
        attention = None
        for index, block in enumerate(stage):
            if isinstance(block, LightUNETRBlock):
                want = attention_last and index == len(stage) - 1
                x, attention = block(x, return_attention=want, use_sdpa=self.use_sdpa)
            else:
                x = block(x)
        return x, attention

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        self.check_input(x)
        input_size = x.shape[2:]
        x = self.stem(x)
        skips = []
        for level in range(4):
            x, _ = self._run_stage(self.encoder_stages[level], x)
            skips.append(x)
            x = self.downsamplers[level](x)
        x, grid16 = pad_odd_axes(x)
        x, _ = self._run_stage(self.bottleneck, x)
        x = crop_to(x, grid16)
        attention = None
        for level in (3, 2, 1, 0):
            x = self.upsamplers[level](x) + skips[level]
            x, level_attention = self._run_stage(self.decoder_stages[level], x, return_attention and level == 2)
            if level == 2:
                attention, attention_grid = level_attention, x.shape[2:]
        logits = self.head(x)
        if not return_attention:
            return logits
        reduction = self.decoder_stages[2][-1].reduction
        return logits, attention_to_volume(attention, attention_grid, reduction, input_size)
