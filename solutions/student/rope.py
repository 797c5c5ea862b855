"""Reference solution of student/rope.py (chapter 03): RoPE, rotate-half layout."""

import torch
from torch import nn


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))  # (d/2,)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # (..., d/2) each
    return torch.cat((-x2, x1), dim=-1)  # (..., d)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos[:, None] + rotate_half(x) * sin[:, None]  # (B, heads, T, d): one table for all heads


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta), persistent=False)

    def reset_inv_freq(self, device: torch.device | str | None = None) -> None:
        self.inv_freq = rope_inv_freq(self.head_dim, self.theta).to(device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, T, d/2): angle = pos * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, d): both halves of a pair share an angle
        return angles.cos().to(dtype), angles.sin().to(dtype)  # fp32, then cast
