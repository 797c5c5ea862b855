"""Expected answers of chapter 07, the whole model."""

from __future__ import annotations

import torch

from ..exercises import exercise
from ..params import count_parameters


# ------------------------------------------------------------------- 07 The whole model
@exercise("07.1")
def _attention_parameters(config) -> int:
    # q, k, v, out projections (count_parameters' "attention" group) plus each layer's q/k norms (in its "norms")
    return count_parameters(config).by_group["attention"][0] + 2 * config.head_dim * len(config.attention_layers)


def _configs(config) -> list[tuple]:
    from ..config import LFM2Config

    big = LFM2Config()  # LFM2-8B-A1B as published
    return [(big,), (config,), (big.replace(num_experts_per_tok=2, num_dense_layers=4),)]


@exercise("07.2", inputs=_configs)
def _active_parameters(config):
    return lambda c: count_parameters(c).active  # parameters a token runs through, the tied head once


@exercise("07.3")
def _positions_changed_by_the_last_token(model, ids) -> int:
    # replace the last token: how many earlier positions' logits move beyond rounding? Rounding: 1e-3 of
    # the logit scale in fp32; in bf16 measured (course.tolerance: twice bf16's distance from fp32 here)
    from .. import course

    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % model.config.vocab_size
    a, b = model(ids).logits[0, :-1], model(other).logits[0, :-1]  # (T-1, V) in the model's dtype

    def exact_and_working():
        with course.upcast(model):
            return model(ids).logits[0, :-1], a  # the same weights computed in fp32, and as run

    tol = course.tolerance(model.dtype, fp32=1e-3 * a.float().abs().max().item(), measure=exact_and_working)
    return int(((a.float() - b.float()).abs().amax(-1) > tol.atol).sum())


@exercise("07.4")
def _part_with_most_parameters(model) -> str:
    groups = count_parameters(model).by_group
    return max(groups, key=lambda g: groups[g][0])
