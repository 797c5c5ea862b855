"""Expected answers of chapter 13, making it fast."""

from __future__ import annotations

import math

from .. import variants
from ..cache import expected_cache_bytes
from ..config import LFM2Config
from ..exercises import exercise


def _weights_per_step(config, batch: int, bytes_per_weight: float) -> float:
    # The weights one decode step of `batch` tokens reads: chapter 12's count, uniform routing.
    touched = variants.uniform_experts_touched(config.num_experts, config.num_experts_per_tok, batch)
    return variants.weight_bytes_per_step(config, touched, bytes_per_weight)


# A rate from two byte counts and one measured bandwidth: 0.1% leaves room for rounding the
# bandwidth the student reads off, not for a missing term (the cache at 32k is several %).
@exercise("13.1", atol=0.0, rtol=1e-3)
def _ceiling_at_32k_tokens(config, bandwidth: float) -> float:
    weights = _weights_per_step(config, 1, 2)  # bf16, batch 1: the active weights, k experts per MoE layer
    cache = sum(expected_cache_bytes(config, 32_768, 2).values())  # attention reads all its K and V
    return bandwidth / (weights + cache)


def _inputs_13_2() -> list[tuple]:
    small = LFM2Config(model_type="lfm2_moe", vocab_size=4096, hidden_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2,
                       layer_types=["conv", "full_attention", "conv", "full_attention"], intermediate_size=448,
                       num_dense_layers=1, num_experts=16, num_experts_per_tok=2, moe_intermediate_size=128)
    lfm2_8b = LFM2Config()  # the published LFM2-8B-A1B
    # (config, batch, context, bandwidth in bytes/s, bytes per weight)
    return [(lfm2_8b, 1, 0, 20e9, 2), (lfm2_8b, 8, 4096, 20e9, 2), (lfm2_8b, 64, 32_768, 3.35e12, 2),
            (lfm2_8b, 256, 0, 1e12, 1), (small, 16, 1024, 15e9, 4), (small, 3, 7, 12e9, 2)]


# Uniform routing, each sequence its own cache; every term an integer count but the union of
# experts: float rounding only.
@exercise("13.2", atol=0.0, rtol=1e-9, inputs=_inputs_13_2)
def _memory_bound_tokens_per_second():
    def memory_bound_tokens_per_second(config, batch: int, context: int, bandwidth: float,
                                       bytes_per_weight: float) -> float:
        weights = _weights_per_step(config, batch, bytes_per_weight)  # read once, shared by the batch
        caches = sum(expected_cache_bytes(config, context, bytes_per_weight, batch=batch).values())  # one per sequence
        return batch * bandwidth / (weights + caches)  # B tokens per step

    return memory_bound_tokens_per_second


# int8 weights: 1 byte and 2 flops (multiply, add) per weight and token, so B tokens sharing a
# weight matrix do 2B flops per byte; memory stops being the limit where 2B reaches the ridge.
@exercise("13.3")
def _batch_past_the_ridge(ridge: float) -> int:
    return math.ceil(ridge / 2)
