"""What a conv layer and an attention layer cost per token (lfm2_edu.params.mixer_costs), checked
against the parameter counts and against the multiply-adds torch itself counts in a forward pass."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lfm2_edu import LFM2Config, count_parameters
from lfm2_edu.attention import GroupedQueryAttention
from lfm2_edu.conv import ShortConv
from lfm2_edu.params import attention_crossover, mixer_costs
from reference import tiny_config


@pytest.mark.parametrize("config", [LFM2Config(), tiny_config(), tiny_config(num_key_value_heads=4, conv_bias=True)],
                         ids=["8B-A1B", "tiny", "mha-conv-bias"])
def test_weights_are_the_parameter_counts_per_layer(config):
    cost = mixer_costs(config, 1)
    groups = count_parameters(config).by_group
    assert cost["conv"].weights * len(config.conv_layers) == groups["conv"][0]
    assert cost["full_attention"].weights * len(config.attention_layers) == groups["attention"][0]


@torch.no_grad()
@pytest.mark.parametrize("S", [1, 7, 40])
def test_multiply_adds_are_what_torch_counts(S):
    # One token at position S, after S-1 cached ones: FlopCounterMode counts matmuls and the conv
    # (2 flops per multiply-add); the element-wise gates B*x and C*y (2H) it does not see.
    config = tiny_config()
    H, d = config.hidden_size, config.head_dim
    cost = mixer_costs(config, S)
    conv = ShortConv(config, layer_idx=0)
    with FlopCounterMode(display=False) as counter:
        conv(torch.randn(1, S, H))  # S tokens at once: the conv's per-token cost does not depend on S
    assert counter.get_total_flops() // 2 == S * (cost["conv"].multiply_adds - 2 * H)
    attn = GroupedQueryAttention(config, layer_idx=1)
    k = torch.randn(1, config.num_key_value_heads, S, d)
    with FlopCounterMode(display=False) as counter:  # the last token, S keys and values visible
        q = attn.q_proj(torch.randn(1, 1, H))
        attn.k_proj(torch.randn(1, 1, H)), attn.v_proj(torch.randn(1, 1, H))
        q = q.view(1, 1, config.num_attention_heads, d).transpose(1, 2)  # (1, nh, 1, d)
        kk = k.repeat_interleave(config.num_attention_heads // config.num_key_value_heads, dim=1)  # (1, nh, S, d)
        probs = (q @ kk.transpose(-1, -2)).softmax(-1)  # (1, nh, 1, S)
        attn.out_proj((probs @ kk).transpose(1, 2).reshape(1, 1, -1))  # (1, 1, H)
    assert counter.get_total_flops() // 2 == cost["full_attention"].multiply_adds


def test_the_crossover_is_the_first_context_where_attention_costs_more():
    for config in (LFM2Config(), tiny_config(), LFM2Config().replace(num_key_value_heads=32)):
        S = attention_crossover(config)
        at, before = mixer_costs(config, S), mixer_costs(config, max(1, S - 1))
        assert at["full_attention"].multiply_adds > at["conv"].multiply_adds
        assert S == 1 or before["full_attention"].multiply_adds <= before["conv"].multiply_adds
    # LFM2-8B-A1B by hand: conv 4H^2 + 2H + 3H, attention 2H^2 + 2H*512 + 2*2048*S
    H = 2048
    assert attention_crossover(LFM2Config()) == (4 * H * H + 5 * H - (2 * H * H + 2 * H * 512)) // 4096 + 1


def test_bad_context_length():
    with pytest.raises(ValueError, match=r"context_length: expected an integer >= 1 \(the token itself\), found 0"):
        mixer_costs(LFM2Config(), 0)
