"""The SwiGLU feed-forward block: the dense layers' MLP, and each expert of the MoE layers.

y = w2( silu(w1 x) * (w3 x) ): w1 is the gate, w3 the up projection, w2 the down projection.
The names w1/w2/w3 are those of the checkpoints (Llama's gate_proj/down_proj/up_proj).
"""

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden_size, intermediate_size, bias=False)  # gate
        self.w3 = nn.Linear(hidden_size, intermediate_size, bias=False)  # up
        self.w2 = nn.Linear(intermediate_size, hidden_size, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (..., I) inside
