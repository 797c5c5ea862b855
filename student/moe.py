"""Chapter 06: the sparse mixture-of-experts block: its sigmoid router and its experts.

Your version of lfm2_edu.moe.SparseMoE. Grade it: python -m student.grade --chapter 06
The experts are the package's SwiGLU; the router's decisions go back in lfm2_edu.moe.Routing.
"""

from __future__ import annotations

import torch
from torch import nn

from lfm2_edu.config import LFM2Config
from lfm2_edu.mlp import SwiGLU
from lfm2_edu.moe import Routing

from . import todo


class SparseMoE(nn.Module):
    def __init__(self, config: LFM2Config) -> None:
        super().__init__()
        H, E = config.hidden_size, config.num_experts
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.gate = nn.Linear(H, E, bias=False)  # the router, weight (E, H)
        self.experts = nn.ModuleList(SwiGLU(H, config.moe_intermediate_size) for _ in range(E))
        if config.use_expert_bias:
            self.register_buffer("expert_bias", torch.zeros(E, dtype=torch.float32))  # in checkpoints
        else:
            self.expert_bias = None

    def route(self, x: torch.Tensor) -> Routing:
        """x (N, H), one row per token -> Routing(logits, scores, selection_scores, selected, weights).

        - logits (N, E): the gate's output; scores (N, E): their sigmoid, one independent score
          per expert.
        - selection_scores (N, E): scores + expert_bias (just scores when expert_bias is None);
          selected (N, k): the k experts with the highest selection scores, best first.
        - weights (N, k): the selected experts' scores; if self.norm_topk_prob, divided by their
          sum + 1e-6; then multiplied by self.routed_scaling_factor.
        """
        todo("SparseMoE.route", "moe.py", "06")

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """h (B, T, H) normed -> (output (B, T, H), the Routing of its B*T tokens).
        Each token's output is the sum over its selected experts of weight * expert(token)."""
        todo("SparseMoE.forward", "moe.py", "06")
