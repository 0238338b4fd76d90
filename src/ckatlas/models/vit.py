"""A small vision transformer family of depth x width, with the layer conventions of the CNNs.

``vit<depth>``: a patch embedding (a `patch_size` convolution, then a learnt position
embedding), `depth` pre-norm transformer blocks, a final LayerNorm, the mean over tokens
and a linear head (Dosovitskiy et al. 2021, without the class token: the mean over tokens
is the pooled feature, as the global average pool is in the ResNets). Width scales the
token dimension: 64 x width, rounded to a multiple of 16, with one head per 16
dimensions (width 0.5: 32 dims, 2 heads; 1: 64, 4; 2: 128, 8); the MLP is 4x wider.

Every activation point is its own module, called once per forward (DESIGN.md):

    embed.proj, embed.tokens                 patch features; tokens + positions (the stem output)
    blocks.<i>.norm1, .attn.qkv, .attn.proj  pre-norm, attention in and out
    blocks.<i>.add1                          the residual sum after attention
    blocks.<i>.norm2, .fc1, .act, .fc2       pre-norm, MLP
    blocks.<i>.add2                          the residual sum after the MLP: the block's output
    norm, pool, fc                           final norm, mean over tokens, logits

"all" lists them in that order; "blocks" lists ``embed.tokens``, each block's ``add2``,
``pool`` and ``fc``. Token outputs are (n, tokens, dim): a heatmap flattens them
(`ckatlas.capture.tokens`), as it flattens a CNN's feature maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.models.base import LayeredModel, _scratch, check_positive_int, is_positive_number
from ckatlas.models.modules import Add

HEAD_DIM = 16
BASE_DIM = 64
MAX_TOKENS = 256


def token_dim(width: float) -> int:
    """Token dimension of width `width`: 64 x width, rounded to a multiple of 16 (at least 16)."""
    return max(HEAD_DIM, int(round(BASE_DIM * width / HEAD_DIM)) * HEAD_DIM)


class Tokens(nn.Module):
    """(n, dim, h, w) patch features -> (n, h*w, dim) tokens plus a learnt position embedding."""

    def __init__(self, dim: int, max_tokens: int = MAX_TOKENS) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, max_tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        if tokens.shape[1] > self.position.shape[1]:
            raise UserInputError(f"{tokens.shape[1]} patches exceed the {self.position.shape[1]} positions of the "
                                 f"model; use a larger patch_size or smaller images")
        return tokens + self.position[:, : tokens.shape[1]]


class PatchEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.tokens = Tokens(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.proj(x))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """``x + attn(norm1(x))``, then ``+ fc2(act(fc1(norm2(.))))`` (pre-norm)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.add1 = Add()
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.add2 = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add1(self.attn(self.norm1(x)), x)
        return self.add2(self.fc2(self.act(self.fc1(self.norm2(x)))), x)


class TokenMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class VisionTransformer(LayeredModel):
    """The ``vit<depth>`` family (module docstring)."""

    stem_output = "embed.tokens"
    head = "fc"

    def __init__(self, depth: int, width: float = 1.0, num_classes: int = 10, in_channels: int = 3,
                 patch_size: int = 4, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise UserInputError(f"a vision transformer's depth is its number of blocks (>= 1), got {depth!r}")
        if not is_positive_number(width):
            raise UserInputError(f"width must be > 0, got {width}")
        check_positive_int("patch_size", patch_size)
        dim = token_dim(width)
        self.depth, self.width, self.dim, self.patch_size = depth, width, dim, patch_size
        self.embed = PatchEmbedding(in_channels, dim, patch_size)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, dim // HEAD_DIM) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pool = TokenMean()
        self.fc = nn.Linear(dim, num_classes)
        self._init(generator)
        self.to(device=device, dtype=dtype)

    @torch.no_grad()
    def _init(self, generator: torch.Generator | None) -> None:
        """Truncated normal (std 0.02) weights, zero biases; drawn in float32 on the generator's device
        (`ckatlas.models.base`), so one seed gives the same weights on any device and dtype."""
        for module in self.modules():
            params = [module.weight] if isinstance(module, (nn.Linear, nn.Conv2d)) else []
            params += [module.position] if isinstance(module, Tokens) else []
            for p in params:
                p.copy_(nn.init.trunc_normal_(_scratch(p, generator), std=0.02, a=-0.04, b=0.04, generator=generator))
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
                module.bias.zero_()

    @property
    def num_features(self) -> int:
        return self.dim

    def layer_names(self, kind: str = "blocks") -> list[str]:
        if kind == "blocks":
            return [self.stem_output, *[f"blocks.{i}.add2" for i in range(len(self.blocks))], "pool", self.head]
        return super().layer_names(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.norm(self.blocks(self.embed(x)))))


__all__ = ["VisionTransformer", "token_dim"]
