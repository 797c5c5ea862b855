"""Reference solution of student/conv.py (chapter 04): the short convolution and its decode step.

The decode step is written out as the weighted sum it is (the package calls conv1d on the window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lfm2_edu.cache import HybridCache
from lfm2_edu.config import LFM2Config
from lfm2_edu.trace import Capture, record


class ShortConv(nn.Module):
    def __init__(self, config: LFM2Config, layer_idx: int) -> None:
        super().__init__()
        H, L = config.hidden_size, config.conv_L_cache
        self.layer_idx, self.kernel_size = layer_idx, L
        self.in_proj = nn.Linear(H, 3 * H, bias=config.conv_bias)
        self.conv = nn.Conv1d(H, H, kernel_size=L, groups=H, bias=config.conv_bias)
        self.out_proj = nn.Linear(H, H, bias=config.conv_bias)

    def forward(self, h: torch.Tensor, cache: HybridCache | None = None,
                pad_mask: torch.Tensor | None = None, capture: Capture | None = None) -> torch.Tensor:
        batch, T, H = h.shape  # (B, T, H)
        name = f"layers.{self.layer_idx}.conv"
        if pad_mask is not None:
            h = h * pad_mask[:, :, None].to(h.dtype)  # (B, T, H): padding never reaches the state
        B, C, x = self.in_proj(h).chunk(3, dim=-1)  # 3 x (B, T, H), in the order B, C, x
        Bx = B * x  # (B, T, H): gate before the conv
        for stream, value in (("B", B), ("C", C), ("x", x), ("Bx", Bx)):
            record(capture, f"{name}.{stream}", value)

        past = cache.conv_state.get(self.layer_idx) if cache is not None else None
        if past is not None and T == 1:  # one new token: the decode step
            conv_t, cache.conv_state[self.layer_idx] = self.decode_step(Bx[:, 0], past)  # (B, H), (B, H, L-1)
            conv_out = conv_t[:, None]  # (B, 1, H)
        else:
            L = self.kernel_size
            if past is None:
                past = Bx.new_zeros(batch, H, L - 1)  # (B, H, L-1): zeros before the start
            window = torch.cat([past, Bx.transpose(1, 2)], dim=-1)  # (B, H, L-1+T)
            if cache is not None:
                cache.conv_state[self.layer_idx] = window[:, :, window.shape[-1] - (L - 1):].clone()  # (B, H, L-1): a copy, not a view of the window
            conv_out = F.conv1d(window, self.conv.weight, self.conv.bias, groups=H).transpose(1, 2)  # (B, T, H)
        record(capture, f"{name}.conv_out", conv_out)
        return self.out_proj(C * conv_out)  # gate after the conv; (B, T, H)

    def decode_step(self, Bx_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        window = torch.cat([state, Bx_t[:, :, None]], dim=-1)  # (B, H, L): the cached values, then this token
        y = (window * self.conv.weight[:, 0]).sum(-1)  # (B, H): y[c] = sum_j w[c, j] * window[c, j]
        if self.conv.bias is not None:
            y = y + self.conv.bias
        return y, window[:, :, 1:].clone()  # (B, H); (B, H, L-1): a copy, or the cache keeps all L
