"""Reference solution of student/moe.py (chapter 06): the sigmoid router and the experts."""

from __future__ import annotations

import torch
from torch import nn

from lfm2_edu.config import LFM2Config
from lfm2_edu.mlp import SwiGLU
from lfm2_edu.moe import Routing


class SparseMoE(nn.Module):
    def __init__(self, config: LFM2Config) -> None:
        super().__init__()
        H, E = config.hidden_size, config.num_experts
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.gate = nn.Linear(H, E, bias=False)
        self.experts = nn.ModuleList(SwiGLU(H, config.moe_intermediate_size) for _ in range(E))
        if config.use_expert_bias:
            self.register_buffer("expert_bias", torch.zeros(E, dtype=torch.float32))
        else:
            self.expert_bias = None

    def route(self, x: torch.Tensor) -> Routing:
        logits = self.gate(x)  # (N, E)
        scores = torch.sigmoid(logits)  # (N, E)
        selection_scores = scores if self.expert_bias is None else scores + self.expert_bias  # (N, E)
        selected = torch.topk(selection_scores, self.top_k, dim=-1).indices  # (N, k), best first
        weights = scores.gather(-1, selected)  # (N, k): from the unbiased scores
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
        weights = weights * self.routed_scaling_factor  # (N, k)
        return Routing(logits, scores, selection_scores, selected, weights)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        batch, T, H = h.shape
        x = h.reshape(-1, H)  # (N, H)
        routing = self.route(x)
        out = torch.zeros_like(x)  # (N, H)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.where(routing.selected == e)  # (n_e,), (n_e,)
            if token_idx.numel():
                y = expert(x[token_idx]) * routing.weights[token_idx, slot, None]  # (n_e, H)
                out.index_add_(0, token_idx, y.to(out.dtype))
        return out.view(batch, T, H), routing  # (B, T, H)
