"""One decoder layer: a pre-norm residual block with a token mixer and a feed-forward block.

    h = h + mixer(operator_norm(h))     mixer = ShortConv or GroupedQueryAttention (layer_types[i])
    h = h + ffn(ffn_norm(h))            ffn = SwiGLU if i < num_dense_layers (or dense LFM2), else SparseMoE
Same shape as a Llama layer; only the choice of mixer and feed-forward changes per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import GroupedQueryAttention
from .cache import HybridCache
from .config import LFM2Config
from .conv import ShortConv
from .mlp import SwiGLU
from .moe import SparseMoE
from .norm import RMSNorm
from .trace import Capture, record


class DecoderLayer(nn.Module):
    def __init__(self, config: LFM2Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.is_attention = config.is_attention_layer(layer_idx)
        self.is_moe = config.is_moe_layer(layer_idx)
        self.operator_norm = RMSNorm(config.hidden_size, config.norm_eps)
        if self.is_attention:
            self.self_attn = GroupedQueryAttention(config, layer_idx)
        else:
            self.conv = ShortConv(config, layer_idx)
        self.ffn_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.feed_forward = SparseMoE(config) if self.is_moe else SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor,
                pad_mask: torch.Tensor | None = None, cache: HybridCache | None = None,
                capture: Capture | None = None) -> torch.Tensor:
        name = f"layers.{self.layer_idx}"
        record(capture, f"{name}.input", h)
        x = self.operator_norm(h)  # (B, T, H)
        record(capture, f"{name}.operator_norm", x)
        if self.is_attention:
            mixed = self.self_attn(x, cos, sin, allowed, cache=cache, capture=capture)
        else:
            mixed = self.conv(x, cache=cache, pad_mask=pad_mask, capture=capture)
        record(capture, f"{name}.mixer.output", mixed)
        h = h + mixed  # (B, T, H) residual

        x = self.ffn_norm(h)  # (B, T, H)
        record(capture, f"{name}.ffn_norm", x)
        if self.is_moe:
            y, routing = self.feed_forward(x)
            if capture is not None:
                batch, T = h.shape[:2]
                for field in ("logits", "scores", "selection_scores", "selected", "weights"):
                    key = "router_logits" if field == "logits" else field
                    record(capture, f"{name}.moe.{key}", getattr(routing, field).view(batch, T, -1))
        else:
            y = self.feed_forward(x)
        record(capture, f"{name}.ffn.output", y)
        h = h + y  # (B, T, H) residual
        record(capture, f"{name}.output", h)
        return h
