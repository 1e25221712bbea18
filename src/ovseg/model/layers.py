"""Transformer building blocks shared by the image encoder, the grouping block and the entity decoder.

Key names (``qkv``, ``q_proj``, ``norm_post``, ``mlp.fc1`` ...) follow GroupViT/OVSegmentor so that official
state dicts map onto these modules without renaming. Attention runs through
``F.scaled_dot_product_attention`` (fused kernels on GPU, one call on CPU).

Inside ``onednn_linears()`` (CPU inference, ``evaluate.seg.precision=auto``), the linear layers of ``Mlp`` and
``Attention`` run as oneDNN inner products with the bias (and ``fc1``'s GELU) fused in: fp32 arithmetic in
another summation order, ~1.25x faster per product where MKL's sgemm takes a slow path (AMD).
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN = contextvars.ContextVar("ovseg_onednn_linears", default=False)


@contextlib.contextmanager
def onednn_linears(enabled: bool = True):
    """Run the enclosed fp32 CPU forward passes' ``Mlp``/``Attention`` linears through oneDNN (see the module
    docstring). Without effect under autograd, on other devices or dtypes, or while exporting/compiling; a
    context variable, so other threads (a web server's requests) keep their own setting."""
    available = hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()
    token = _ONEDNN.set(enabled and available)
    try:
        yield
    finally:
        _ONEDNN.reset(token)


def _onednn_applies(x: torch.Tensor) -> bool:
    return (_ONEDNN.get() and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


def apply_linear(layer: nn.Linear, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """``layer(x)`` (then exact GELU when ``gelu``), fused in one oneDNN call inside ``onednn_linears``."""
    if _onednn_applies(x):
        attr, algorithm = ("gelu", "none") if gelu else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, attr, [], algorithm)
    y = layer(x)
    return F.gelu(y) if gelu else y


class Mlp(nn.Module):
    """Two linear layers with GELU between them; applied over the last axis."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_applies(x) and not self.training and self.act.approximate == "none":
            return apply_linear(self.fc2, apply_linear(self.fc1, x, gelu=True))
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head attention; ``fused`` keeps one ``qkv`` Linear (self-attention, DINO key names),
    otherwise ``q_proj``/``k_proj``/``v_proj`` (cross-attention)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, fused: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.fused = fused
        if fused:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, C) -> (B, heads, N, C/heads)
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, N, C), key/value (B, S, C) or None for self-attention; attn_mask broadcastable to
        (B, heads, N, S), boolean (True = attend) or additive."""
        b, n, c = query.shape
        if self.fused:
            qkv = apply_linear(self.qkv, query).view(b, n, 3, self.num_heads, c // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
        else:
            key = query if key is None else key
            q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(key))
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.proj_drop(apply_linear(self.proj, out.transpose(1, 2).reshape(b, n, c)))


class AttnBlock(nn.Module):
    """Pre-norm ViT block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, fused=True)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask=attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttnBlock(nn.Module):
    """Queries attend to keys. ``post_norm`` (what GroupViT's grouping and OVSegmentor's entity decoder
    use): q + attn(q, k), then + MLP(LN(.)), then LN; otherwise both inputs are pre-normed."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, post_norm: bool = True):
        super().__init__()
        self.post_norm = post_norm
        if post_norm:
            self.norm_post = nn.LayerNorm(dim)
        else:
            self.norm_q = nn.LayerNorm(dim)
            self.norm_k = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, fused=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.post_norm:
            x = query + self.attn(query, key, attn_mask=attn_mask)
            return self.norm_post(x + self.mlp(self.norm2(x)))
        x = query + self.attn(self.norm_q(query), self.norm_k(key), attn_mask=attn_mask)
        return x + self.mlp(self.norm2(x))
