"""Chapter 04: the double-gated short convolution, with its one-token decode step.

Your version of lfm2_edu.conv.ShortConv. Grade it: python -m student.grade --chapter 04
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401  (F.conv1d does a depthwise conv with groups=H)
from torch import nn

from lfm2_edu.cache import HybridCache
from lfm2_edu.config import LFM2Config
from lfm2_edu.trace import Capture, record  # noqa: F401  (record the streams, see forward)

from . import todo


class ShortConv(nn.Module):
    def __init__(self, config: LFM2Config, layer_idx: int) -> None:
        super().__init__()
        H, L = config.hidden_size, config.conv_L_cache
        self.layer_idx, self.kernel_size = layer_idx, L
        self.in_proj = nn.Linear(H, 3 * H, bias=config.conv_bias)  # -> B, C, x
        # Depthwise: one kernel of L taps per channel, weight (H, 1, L).
        # Tap L-1 multiplies the current token, tap 0 the token L-1 steps back.
        self.conv = nn.Conv1d(H, H, kernel_size=L, groups=H, bias=config.conv_bias)
        self.out_proj = nn.Linear(H, H, bias=config.conv_bias)

    def forward(self, h: torch.Tensor, cache: HybridCache | None = None,
                pad_mask: torch.Tensor | None = None, capture: Capture | None = None) -> torch.Tensor:
        """h (B, T, H), already normed -> (B, T, H).

        - pad_mask (B, T), when given: 1 for real tokens, 0 for left padding; zero the padded rows
          of h first, so that padding never reaches the conv state.
        - B, C, x: in_proj(h) split in three, in this order. The conv runs over B * x, causally
          (each token sees itself and the L-1 tokens before it, zeros before the start), one
          kernel per channel; its output is multiplied by C, then out_proj.
        - cache: when given, the L-1 values of B * x before this chunk are
          cache.conv_state.get(self.layer_idx) ((B, H, L-1), None before the first chunk), and
          after the chunk cache.conv_state[self.layer_idx] must hold its last L-1 values.
          A single new token (T == 1) with a state is one call to self.decode_step.
        - For the figures and the grader, record the streams as the package does:
          record(capture, f"layers.{self.layer_idx}.conv.B", B) and likewise C, x, Bx and
          conv_out (the conv's output before the C gate), each (B, T, H).
        """
        todo("ShortConv.forward", "conv.py", "04")

    def decode_step(self, Bx_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: its gated input Bx_t (B, H) and the last L-1 values state (B, H, L-1) ->
        (the conv output for this token (B, H), the new state (B, H, L-1): the last L-1 values
        now, this token's included). The conv bias, if any, is added to the output."""
        todo("ShortConv.decode_step", "conv.py", "04")
