"""Grouped-query attention with per-head q/k RMSNorm, as in LFM2's attention layers.

Differences from a Llama attention block:
- `q_layernorm` / `k_layernorm`: an RMSNorm over each head's d channels (one weight of size d
  shared by all heads), applied to queries and keys before RoPE. It keeps q.k in range.
- the output projection is called `out_proj`; no biases anywhere.
GQA: nh query heads share nkv key/value heads; kv head j serves query heads j*g .. j*g+g-1,
g = nh/nkv. The cache stores only the nkv heads: g times smaller than multi-head attention.
This readable path writes the softmax out (and so can report the probabilities); softmax in fp32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .cache import HybridCache
from .config import LFM2Config
from .norm import RMSNorm
from .rope import apply_rope
from .trace import Capture, record


class GroupedQueryAttention(nn.Module):
    def __init__(self, config: LFM2Config, layer_idx: int) -> None:
        super().__init__()
        H, d = config.hidden_size, config.head_dim
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.group_size = self.n_heads // self.n_kv_heads  # g query heads per kv head
        self.q_proj = nn.Linear(H, self.n_heads * d, bias=False)
        self.k_proj = nn.Linear(H, self.n_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(H, self.n_kv_heads * d, bias=False)
        self.out_proj = nn.Linear(self.n_heads * d, H, bias=False)
        self.q_layernorm = RMSNorm(d, config.norm_eps)
        self.k_layernorm = RMSNorm(d, config.norm_eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor,
                cache: HybridCache | None = None, capture: Capture | None = None) -> torch.Tensor:
        """h: (B, T, H) normed; cos/sin: (B, T, d); allowed: (B, 1, T, S) True where t may see s."""
        batch, T, _ = h.shape
        nh, nkv, d = self.n_heads, self.n_kv_heads, self.head_dim
        name = f"layers.{self.layer_idx}.attn"
        q = self.q_layernorm(self.q_proj(h).view(batch, T, nh, d)).transpose(1, 2)  # (B, nh, T, d)
        k = self.k_layernorm(self.k_proj(h).view(batch, T, nkv, d)).transpose(1, 2)  # (B, nkv, T, d)
        v = self.v_proj(h).view(batch, T, nkv, d).transpose(1, 2)  # (B, nkv, T, d)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # rotate by position
        if cache is not None:
            k, v = cache.update_kv(self.layer_idx, k, v)  # (B, nkv, S, d), S = cached + T
        record(capture, f"{name}.q", q)
        record(capture, f"{name}.k", k)
        record(capture, f"{name}.v", v)

        # Share each kv head with its g query heads: [k0, k0, .., k1, k1, ..].
        k = k.repeat_interleave(self.group_size, dim=1)  # (B, nh, S, d)
        v = v.repeat_interleave(self.group_size, dim=1)  # (B, nh, S, d)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))  # (B, nh, T, S): q.k / sqrt(d)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)  # causal + padding
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, nh, T, S)
        record(capture, f"{name}.probs", probs)
        out = probs @ v  # (B, nh, T, d)
        out = out.transpose(1, 2).reshape(batch, T, nh * d)  # (B, T, nh*d): heads side by side
        return self.out_proj(out)  # (B, T, H)
