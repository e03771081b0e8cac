"""Building blocks of Light-UNETR and Light-UNETR-L (``LightUNETRBlock`` and the Light-UNETR-L blocks of the authors'
code_cse/networks/).

Tensors are ``(B, C, X, Y, Z)`` everywhere. Each block is small and documented so that the macro
networks in :mod:`lightunetr.py <lightunetr_core.models.lightunetr>` and
:mod:`lightunetr_large.py <lightunetr_core.models.lightunetr_large>` read like the tables of the spec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SqueezeExcitation",
    "LightweightDimensionReductiveAttention",
    "SpatialRecover",
    "ConvGatedLinearUnit",
    "LightUNETRBlock",
    "ResidualConvBlock",
    "ResidualDownBlock",
    "ResidualUpBlock",
]


class SqueezeExcitation(nn.Module):
    """Channel re-weighting: global average pool → Linear(C→C//r) → ReLU → Linear → sigmoid → scale.

    Args:
        channels: number of channels C.
        reduction: squeeze ratio r; ``C // r`` must be at least 1.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"SqueezeExcitation needs channels >= reduction ({channels} < {reduction})")
        self.squeeze = nn.Linear(channels, hidden, bias=False)
        self.excite = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = x.mean(dim=(2, 3, 4))
        weights = torch.sigmoid(self.excite(F.relu(self.squeeze(weights))))
        return x * weights[:, :, None, None, None]


class _HighFrequencyBranch(nn.Sequential):
    """1×1 conv C/3→C/6, BatchNorm, GELU, grouped k×k×k conv (C/6 groups, C/6→C/3), GELU."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        reduced = channels // 2
        super().__init__(
            nn.Conv3d(channels, reduced, 1, bias=False),
            nn.BatchNorm3d(reduced),
            nn.GELU(),
            nn.Conv3d(reduced, channels, kernel_size, padding=kernel_size // 2, groups=reduced, bias=False),
            nn.GELU(),
        )


class LightweightDimensionReductiveAttention(nn.Module):
    """LIDR: attention on a decimated grid for one third of the channels, convolutions for the rest.

    The input is decimated by ``reduction`` (strided sampling, as the reference's kernel-1 pooling
    does), its channels are split into three groups: the first goes through multi-head self-attention
    over all tokens (unscaled logits, like the reference and its checkpoints), the others through
    high-frequency convolution branches with kernels ``high_freq_kernels``. The output stays on the
    reduced grid; :class:`SpatialRecover` brings it back.

    Args:
        channels: C, divisible by 6 and C/3 divisible by ``heads``.
        heads: attention heads.
        reduction: spatial reduction r (every axis of the input must be divisible by r).
        high_freq_kernels: kernel sizes of the two convolution branches.
    """

    def __init__(
        self, channels: int, heads: int, reduction: int, high_freq_kernels: tuple[int, int] = (3, 5)
    ) -> None:
        super().__init__()
        if channels % 6 != 0:
            raise ValueError(f"LIDR channels must be divisible by 6, got {channels}")
        third = channels // 3
        if third % heads != 0:
            raise ValueError(f"LIDR channels/3 ({third}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = third // heads
        self.third = third
        self.reduction = reduction
        self.qkv = nn.Conv3d(third, 3 * third, 1, bias=False)
        self.high_freq_small = _HighFrequencyBranch(third, high_freq_kernels[0])
        self.high_freq_large = _HighFrequencyBranch(third, high_freq_kernels[1])

    def forward(
        self, x: torch.Tensor, return_attention: bool = False, use_sdpa: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the reduced-grid features and, if asked, the attention each key token receives,
        averaged over heads and queries, shape (B, N) (it sums to 1 over tokens)."""
        r = self.reduction
        if r > 1:
            x = x[:, :, ::r, ::r, ::r]
        low, high_small, high_large = x.split(self.third, dim=1)
        batch, grid = x.shape[0], x.shape[2:]
        tokens = grid.numel()
        # Per head the channel order is [q(d), k(d), v(d)] (reference layout, needed for its weights).
        qkv = self.qkv(low).reshape(batch, self.heads, 3 * self.head_dim, tokens)
        q, k, v = qkv.split(self.head_dim, dim=2)  # each (B, heads, d, N)
        attention_map = None
        if return_attention or not use_sdpa:
            attn = torch.softmax(q.transpose(-2, -1) @ k, dim=-1)  # (B, heads, N queries, N keys)
            out = v @ attn.transpose(-2, -1)  # (B, heads, d, N)
            if return_attention:
                attention_map = attn.detach().mean(dim=(1, 2))
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1), scale=1.0
            ).transpose(-2, -1)
        low = out.reshape(batch, self.third, *grid)
        return torch.cat([low, self.high_freq_small(high_small), self.high_freq_large(high_large)], dim=1), attention_map


class SpatialRecover(nn.Module):
    """Back to full grid after LIDR: depthwise transposed conv (k=s=r) → GroupNorm(1) → 1×1 conv.

    The 1×1 convolution plays the role of the attention output projection.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose3d(channels, channels, reduction, stride=reduction, groups=channels)
        self.norm = nn.GroupNorm(1, channels)
        self.project = nn.Conv3d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.norm(self.upsample(x)))


class ConvGatedLinearUnit(nn.Module):
    """CGLU: ``W_rec(W_id x ⊙ sigmoid(W_gate x))`` with 1×1 convs and hidden width ``ratio·C``."""

    def __init__(self, channels: int, ratio: int = 2) -> None:
        super().__init__()
        hidden = channels * ratio
        self.identity = nn.Conv3d(channels, hidden, 1, bias=False)
        self.gate = nn.Conv3d(channels, hidden, 1, bias=False)
        self.recover = nn.Conv3d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recover(self.identity(x) * torch.sigmoid(self.gate(x)))


class LightUNETRBlock(nn.Module):
    """The Light-UNETR block: depthwise conv, then twice (LIDR + recover, CGLU), all residual, no norms.

    Args:
        channels: C.
        heads: attention heads of both LIDRs.
        reduction: spatial reduction r of both LIDRs.
        high_freq_kernels: kernels of the LIDR convolution branches.
        mlp_ratio: CGLU hidden width as a multiple of C.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        reduction: int,
        high_freq_kernels: tuple[int, int] = (3, 5),
        mlp_ratio: int = 2,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.depthwise = nn.Conv3d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.attention1 = LightweightDimensionReductiveAttention(channels, heads, reduction, high_freq_kernels)
        self.recover1 = SpatialRecover(channels, reduction)
        self.cglu1 = ConvGatedLinearUnit(channels, mlp_ratio)
        self.attention2 = LightweightDimensionReductiveAttention(channels, heads, reduction, high_freq_kernels)
        self.recover2 = SpatialRecover(channels, reduction)
        self.cglu2 = ConvGatedLinearUnit(channels, mlp_ratio)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False, use_sdpa: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the output and, when ``return_attention``, the second LIDR's attention map (B, N)."""
        x = x + self.depthwise(x)
        reduced, _ = self.attention1(x, use_sdpa=use_sdpa)
        x = x + self.recover1(reduced)
        x = x + self.cglu1(x)
        reduced, attention_map = self.attention2(x, return_attention=return_attention, use_sdpa=use_sdpa)
        x = x + self.recover2(reduced)
        x = x + self.cglu2(x)
        return x, attention_map


class _MedNeXtBranch(nn.Module):
    """Depthwise conv → GroupNorm(per channel) → 1×1 expand ×ratio → GELU → 1×1 project."""

    def __init__(self, depthwise: nn.Module, channels: int, out_channels: int, ratio: int) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.norm = nn.GroupNorm(channels, channels)
        self.expand = nn.Conv3d(channels, ratio * channels, 1)
        self.act = nn.GELU()
        self.project = nn.Conv3d(ratio * channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.act(self.expand(self.norm(self.depthwise(x)))))


class ResidualConvBlock(nn.Module):
    """MedNeXt-style residual block used at the full-resolution levels of Light-UNETR-L."""

    def __init__(self, channels: int, ratio: int = 2) -> None:
        super().__init__()
        depthwise = nn.Conv3d(channels, channels, 3, padding=1, groups=channels)
        self.branch = _MedNeXtBranch(depthwise, channels, channels, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ResidualDownBlock(nn.Module):
    """Halves the grid: strided depthwise MedNeXt branch plus a strided 1×1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, ratio: int = 2) -> None:
        super().__init__()
        depthwise = nn.Conv3d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels)
        self.branch = _MedNeXtBranch(depthwise, in_channels, out_channels, ratio)
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class ResidualUpBlock(nn.Module):
    """Doubles the grid: transposed depthwise MedNeXt branch plus a transposed 1×1 shortcut.

    Both produce 2n−1 voxels per axis and are zero-padded by one voxel at the *start* of every axis
    (reference behaviour) to reach 2n.
    """

    def __init__(self, in_channels: int, out_channels: int, ratio: int = 2) -> None:
        super().__init__()
        depthwise = nn.ConvTranspose3d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels)
        self.branch = _MedNeXtBranch(depthwise, in_channels, out_channels, ratio)
        self.shortcut = nn.ConvTranspose3d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(self.branch(x) + self.shortcut(x), (1, 0, 1, 0, 1, 0))
