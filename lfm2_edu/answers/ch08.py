"""Expected answers of chapter 08, generation and the hybrid cache."""

from __future__ import annotations

import torch

from ..cache import expected_cache_bytes
from ..config import LFM2Config
from ..exercises import exercise
from ..generate import Sampling, apply_top_p, process_logits


# ------------------------------------------------------------------- 08 Generation and the hybrid cache
@exercise("08.1")
def _kv_bytes_of_lfm2_24b_a2b() -> int:
    # LFM2-24B-A2B (Liquid AI): 40 layers, 10 of them attention, LFM2-8B-A1B's hidden size and attention
    # (32 query heads, 8 KV heads of 64). Where the 10 sit does not change the KV cache: only their count.
    layer_types = ["full_attention" if i % 4 == 2 else "conv" for i in range(40)]  # 10 attention layers
    config = LFM2Config().replace(num_hidden_layers=40, layer_types=layer_types)
    return expected_cache_bytes(config, 32768, torch.bfloat16)["full_attention"]


def _top_p_inputs() -> list[tuple]:
    g = torch.Generator().manual_seed(8)
    return [(3.0 * torch.randn(2, 50, generator=g), p) for p in (0.5, 0.9, 0.99)] + \
           [(torch.tensor([[4.0, 1.0, 0.0, -2.0]]), 0.01)]  # one clear winner: only it stays


# fp32 on both sides: kept logits are copied, not recomputed; -inf where removed.
@exercise("08.2", atol=1e-6, inputs=lambda: _top_p_inputs())
def _top_p():
    return apply_top_p


@exercise("08.3")
def _tokens_left_at_temperature_one(logits, seen) -> int:
    kept = process_logits(logits[None], seen[None], Sampling(temperature=1.0, min_p=0.15))[0]  # (V,)
    return int(torch.isfinite(kept).sum())


@exercise("08.4")
def _where_attention_overtakes_conv(config, itemsize: int, lengths) -> int:
    # the first context length on the figure's axis where the KV part exceeds the constant conv part
    for n in lengths:
        b = expected_cache_bytes(config, n, itemsize)
        if b["full_attention"] > b["conv"]:
            return int(n)
    return -1  # never on this axis (a model without attention)
