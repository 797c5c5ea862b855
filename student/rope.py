"""Chapter 03: rotary position embedding (RoPE), NeoX "rotate-half" layout over the whole head.

Your versions of lfm2_edu.rope's rope_inv_freq, rotate_half, apply_rope and RotaryEmbedding.
Grade them: python -m student.grade --chapter 03
"""

import torch
from torch import nn

from . import todo


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """The inverse frequency of each channel pair i = 0 .. d/2-1: theta^(-2i/d), fp32, shape (d/2,)."""
    todo("rope_inv_freq", "rope.py", "03")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Split the last dim in two halves (x1, x2) and return (-x2, x1): each pair (i, i + d/2)
    turned by 90 degrees."""
    todo("rotate_half", "rope.py", "03")


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (B, heads, T, d) by their positions' angles.
    cos, sin: (B, T, d), the same for every head. Returns (B, heads, T, d)."""
    todo("apply_rope", "rope.py", "03")


class RotaryEmbedding(nn.Module):
    """Turns positions into the cos/sin tables that `apply_rope` needs."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        # Not in checkpoints (persistent=False) and kept in fp32 whatever the model's dtype.
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta), persistent=False)

    def reset_inv_freq(self, device: torch.device | str | None = None) -> None:
        """Recompute the table (the model is built on the meta device, then loaded)."""
        self.inv_freq = rope_inv_freq(self.head_dim, self.theta).to(device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (B, T) -> (cos, sin), each (B, T, d): the angle of channel c at position p
        is p * inv_freq[c mod d/2] (both halves of a pair share it). Angles, cos and sin in fp32,
        then cast to `dtype`."""
        todo("RotaryEmbedding.forward", "rope.py", "03")
