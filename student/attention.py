"""Chapter 05: grouped-query attention with per-head q/k RMSNorm.

Your version of lfm2_edu.attention.GroupedQueryAttention. Grade it: python -m student.grade --chapter 05
It uses the package's RMSNorm and apply_rope, so it is graded on its own.
"""

from __future__ import annotations

import math  # noqa: F401

import torch
from torch import nn

from lfm2_edu.cache import HybridCache
from lfm2_edu.config import LFM2Config
from lfm2_edu.norm import RMSNorm
from lfm2_edu.rope import apply_rope  # noqa: F401  apply_rope(x (B, heads, T, d), cos, sin)
from lfm2_edu.trace import Capture, record  # noqa: F401

from . import todo


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
        self.q_layernorm = RMSNorm(d, config.norm_eps)  # over each head's d channels, shared by the heads
        self.k_layernorm = RMSNorm(d, config.norm_eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor,
                cache: HybridCache | None = None, capture: Capture | None = None) -> torch.Tensor:
        """h (B, T, H) normed; cos, sin (B, T, d); allowed (B or 1, 1, T, S) True where query t may
        see key s (causality and padding, already combined) -> (B, T, H).

        - q, k, v: the projections split into heads; q_layernorm / k_layernorm on each head of
          q and k, then RoPE on both.
        - cache: when given, k, v = cache.update_kv(self.layer_idx, k, v) appends this chunk's
          keys and values (B, nkv, T, d) and returns all of them so far (B, nkv, S, d).
        - kv head j serves query heads j*g .. j*g+g-1 (g = self.group_size).
        - scores q.k / sqrt(d); the positions that are not allowed get the dtype's lowest value;
          softmax over the keys in fp32, then back to q's dtype; the heads' outputs side by
          side (B, T, nh*d) go through out_proj.
        - Record for the grader and the figures: record(capture, f"layers.{self.layer_idx}.attn.q", q)
          after RoPE, likewise k and v (after the cache update) and probs (B, nh, T, S).
        """
        todo("GroupedQueryAttention.forward", "attention.py", "05")
