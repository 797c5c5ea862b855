"""Rotary position embedding (RoPE), NeoX "rotate-half" layout over the whole head.

Each pair of channels (i, i + d/2) of a query or key is rotated by the angle pos * inv_freq[i],
with inv_freq[i] = theta^(-2i/d). A dot product q.k of rotated vectors then depends only on
the distance between the two positions. LFM2 uses theta = 1e6 and rotates the full head_dim
(no partial rotary), after the per-head q/k RMSNorm.
"""

import torch
from torch import nn


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """inv_freq[i] = 1 / theta^(2i/d), for i = 0 .. d/2-1; always fp32."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))  # (d/2,)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90 degree turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, T, d); cos, sin: (B, T, d). Rotation: x*cos + rotate_half(x)*sin."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]  # (B, heads, T, d)


class RotaryEmbedding(nn.Module):
    """Turns positions into the cos/sin tables that `apply_rope` needs."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        # Not in checkpoints (persistent=False) and kept in fp32 whatever the model's dtype.
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta), persistent=False)

    def reset_inv_freq(self, device: torch.device | str | None = None) -> None:
        """Recompute the table (after building the model on the meta device)."""
        self.inv_freq = rope_inv_freq(self.head_dim, self.theta).to(device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, T, d/2): angle = pos * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, d): both halves of a pair share an angle
        return angles.cos().to(dtype), angles.sin().to(dtype)  # computed in fp32, then cast
