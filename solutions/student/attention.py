"""Reference solution of student/attention.py (chapter 05): grouped-query attention."""

from __future__ import annotations

import math

import torch
from torch import nn

from lfm2_edu.cache import HybridCache
from lfm2_edu.config import LFM2Config
from lfm2_edu.norm import RMSNorm
from lfm2_edu.rope import apply_rope
from lfm2_edu.trace import Capture, record


class GroupedQueryAttention(nn.Module):
    def __init__(self, config: LFM2Config, layer_idx: int) -> None:
        super().__init__()
        H, d = config.hidden_size, config.head_dim
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.group_size = self.n_heads // self.n_kv_heads
        self.q_proj = nn.Linear(H, self.n_heads * d, bias=False)
        self.k_proj = nn.Linear(H, self.n_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(H, self.n_kv_heads * d, bias=False)
        self.out_proj = nn.Linear(self.n_heads * d, H, bias=False)
        self.q_layernorm = RMSNorm(d, config.norm_eps)
        self.k_layernorm = RMSNorm(d, config.norm_eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor,
                cache: HybridCache | None = None, capture: Capture | None = None) -> torch.Tensor:
        batch, T, _ = h.shape
        nh, nkv, d = self.n_heads, self.n_kv_heads, self.head_dim
        name = f"layers.{self.layer_idx}.attn"
        q = self.q_layernorm(self.q_proj(h).view(batch, T, nh, d)).transpose(1, 2)  # (B, nh, T, d)
        k = self.k_layernorm(self.k_proj(h).view(batch, T, nkv, d)).transpose(1, 2)  # (B, nkv, T, d)
        v = self.v_proj(h).view(batch, T, nkv, d).transpose(1, 2)  # (B, nkv, T, d)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update_kv(self.layer_idx, k, v)  # (B, nkv, S, d)
        for stream, value in (("q", q), ("k", k), ("v", v)):
            record(capture, f"{name}.{stream}", value)

        k = k.repeat_interleave(self.group_size, dim=1)  # (B, nh, S, d): [k0, k0, .., k1, k1, ..]
        v = v.repeat_interleave(self.group_size, dim=1)  # (B, nh, S, d)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)  # (B, nh, T, S)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, nh, T, S)
        record(capture, f"{name}.probs", probs)
        out = (probs @ v).transpose(1, 2).reshape(batch, T, nh * d)  # (B, T, nh*d)
        return self.out_proj(out)  # (B, T, H)
