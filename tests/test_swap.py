"""lfm2_edu.swap: a block swapped for another implementation of its interface, and put back."""

import pytest
import torch

import lfm2_edu.generate as gen
import lfm2_edu.layer
import lfm2_edu.model
from lfm2_edu import LFM2Model
from lfm2_edu.norm import RMSNorm
from lfm2_edu.swap import SwapError, check_interface, package_block, swapped
from reference import tiny_config


class OtherNorm(RMSNorm):
    """A stand-in with the same interface."""


def test_swapped_builds_models_with_the_replacement_and_puts_the_package_back():
    config = tiny_config()
    with swapped(RMSNorm=OtherNorm):
        inside = LFM2Model(config)
    outside = LFM2Model(config)
    assert type(inside.embedding_norm) is OtherNorm and type(inside.layers[0].operator_norm) is OtherNorm
    assert type(inside.layers[1].self_attn.q_layernorm) is OtherNorm  # the per-head norms too
    assert type(outside.embedding_norm) is RMSNorm and lfm2_edu.layer.RMSNorm is RMSNorm
    assert lfm2_edu.model.RMSNorm is RMSNorm


def test_swapped_puts_the_package_back_after_an_error():
    with pytest.raises(RuntimeError, match="inside"), swapped(RMSNorm=OtherNorm):
        raise RuntimeError("inside")
    assert lfm2_edu.layer.RMSNorm is RMSNorm


def test_swapped_functions_are_used_while_the_block_is_active():
    calls = []

    def apply_min_p(logits, min_p):
        calls.append(min_p)
        return logits

    logits = torch.randn(1, 10)
    with swapped(apply_min_p=apply_min_p):
        gen.process_logits(logits, torch.zeros(1, 10, dtype=torch.bool), gen.Sampling(temperature=1.0, min_p=0.2))
    gen.process_logits(logits, torch.zeros(1, 10, dtype=torch.bool), gen.Sampling(temperature=1.0, min_p=0.2))
    assert calls == [0.2] and gen.apply_min_p is package_block("apply_min_p")


def test_swap_rejects_what_does_not_fit_with_a_clear_error():
    class WrongInit(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()

    with pytest.raises(SwapError, match=r"RMSNorm.__init__: expected the parameters \(self, dim, eps\) as in "
                                        r"lfm2_edu.norm, found \(self, dim\)"):
        check_interface("RMSNorm", WrongInit)

    class NoDecodeStep(torch.nn.Module):
        def __init__(self, config, layer_idx):
            super().__init__()

        def forward(self, h, cache=None, pad_mask=None, capture=None):
            return h

    with pytest.raises(SwapError, match=r"ShortConv.decode_step: expected a method with the parameters "
                                        r"\(self, Bx_t, state\) as in lfm2_edu.conv, found no such method"):
        check_interface("ShortConv", NoDecodeStep)
    with pytest.raises(SwapError, match="apply_min_p: expected a function like lfm2_edu.generate.apply_min_p, found"):
        check_interface("apply_min_p", OtherNorm)
    with pytest.raises(SwapError, match="expected a block name among RMSNorm, .*, found 'LayerNorm'"):
        with swapped(LayerNorm=OtherNorm):
            pass
