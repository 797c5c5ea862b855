"""Expected answers of chapter 13, making it fast."""

from __future__ import annotations

import math

from ..cache import expected_cache_bytes
from ..exercises import exercise
from ..params import count_parameters

# ---------------------------------------------------------------------------- 13 Making it fast
# A rate from two products of integers and one measured bandwidth: 0.1% leaves room for rounding
# the bandwidth the student reads off, not for a missing term (the cache at 32k is several %).
@exercise("13.1", rtol=1e-3)
def _ceiling_at_32k_tokens(config, bandwidth: float) -> float:
    weights = count_parameters(config).active * 2  # bf16: every active weight once per token
    cache = sum(expected_cache_bytes(config, 32_768, 2).values())  # attention reads all its K and V
    return bandwidth / (weights + cache)


def _inputs_13_2() -> list[tuple[int, int, int]]:
    return [(32, 4, 1), (32, 4, 8), (32, 4, 64), (16, 2, 5), (64, 4, 16), (8, 8, 3)]


# Uniformly random top-k: an expert is missed by one token with probability 1 - k/E exactly
# (k distinct experts of E), by B independent tokens with (1 - k/E)^B.
@exercise("13.2", atol=1e-9, rtol=1e-9, inputs=_inputs_13_2)
def _expected_experts_touched():
    def expected_experts_touched(num_experts: int, k: int, batch: int) -> float:
        return num_experts * (1 - (1 - k / num_experts) ** batch)

    return expected_experts_touched


# int8 weights: 1 byte and 2 flops (multiply, add) per weight and token, so B tokens sharing a
# weight matrix do 2B flops per byte; memory stops being the limit where 2B reaches the ridge.
@exercise("13.3")
def _batch_past_the_ridge(ridge: float) -> int:
    return math.ceil(ridge / 2)
