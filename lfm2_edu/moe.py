"""The sparse mixture-of-experts feed-forward block of LFM2-MoE.

Per token x (size H), with E experts of which k are used:
    logits = gate(x)                        # (E,) a linear router, no bias
    s      = sigmoid(logits)                # independent scores in (0, 1): no softmax
    chosen = topk(s + expert_bias, k)       # the bias only CHOOSES (load balancing) ...
    w      = s[chosen]                      # ... the weights come from the unbiased s
    w      = w / (sum(w) + 1e-6)            # if norm_topk_prob
    w      = w * routed_scaling_factor
    y      = sum_j w_j * expert_{chosen_j}(x)   # each expert a SwiGLU of width moe_intermediate_size
No shared expert, no capacity limit, no auxiliary loss in the forward pass. `expert_bias` is a
buffer, not a trained weight, kept in fp32 whatever the model's dtype. How LFM2-MoE trained it is
not published; by analogy with DeepSeek-V3's auxiliary-loss-free balancing (Wang et al. 2024) it is
assumed to be nudged up for underloaded experts and down for overloaded ones (train.py does so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import LFM2Config
from .mlp import SwiGLU


@dataclass
class Routing:
    """The router's decisions for N tokens (the MoE block returns it beside its output)."""

    logits: torch.Tensor  # (N, E) raw router logits
    scores: torch.Tensor  # (N, E) sigmoid(logits)
    selection_scores: torch.Tensor  # (N, E) scores + expert_bias (= scores without a bias)
    selected: torch.Tensor  # (N, k) chosen experts, best first
    weights: torch.Tensor  # (N, k) their mixing weights


def mixing_weights(scores: torch.Tensor, selected: torch.Tensor, norm_topk_prob: bool,
                   routed_scaling_factor: float) -> torch.Tensor:
    """(N, E) unbiased scores, (N, k) chosen experts -> (N, k) the weights that mix their outputs."""
    weights = scores.gather(-1, selected)  # (N, k) from the unbiased scores, never the bias
    if norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)  # sum to ~1
    return weights * routed_scaling_factor  # (N, k)


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
        """x: (N, H) -> the experts and weights of each of the N tokens."""
        logits = self.gate(x)  # (N, E)
        scores = torch.sigmoid(logits)  # (N, E)
        if self.expert_bias is not None:
            selection_scores = scores + self.expert_bias  # (N, E), fp32: the bias only selects
        else:
            selection_scores = scores
        selected = torch.topk(selection_scores, self.top_k, dim=-1).indices  # (N, k)
        weights = mixing_weights(scores, selected, self.norm_topk_prob, self.routed_scaling_factor)  # (N, k)
        return Routing(logits, scores, selection_scores, selected, weights)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """h: (B, T, H) normed -> (output (B, T, H), the routing of the B*T tokens)."""
        batch, T, H = h.shape
        x = h.reshape(-1, H)  # (N, H), N = B*T: routing is per token
        routing = self.route(x)
        out = torch.zeros_like(x)  # (N, H)
        # Loop over experts, not tokens: each expert runs once on all tokens that chose it.
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.where(routing.selected == e)  # (n_e,), (n_e,)
            if token_idx.numel() == 0:
                continue  # nobody chose expert e: its weights are not even read
            y = expert(x[token_idx]) * routing.weights[token_idx, slot, None]  # (n_e, H)
            out.index_add_(0, token_idx, y.to(out.dtype))  # scatter back to its tokens
        return out.view(batch, T, H), routing
