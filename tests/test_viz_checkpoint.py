"""Figures of chapters 00 and 01: the data they draw is right (tiny random models, no download)."""

import json
import struct

import matplotlib.pyplot as plt
import pytest
import torch

from lfm2_edu import LFM2Config, count_parameters, published, save_model
from lfm2_edu.params import GROUPS
from lfm2_edu.viz import checkpoint as vc
from reference import tiny_config
from test_cache import random_model

C, A = "conv", "full_attention"
CONFIGS = {
    "moe": tiny_config(),
    "moe-untied-convbias": tiny_config(tie_word_embeddings=False, conv_bias=True, num_dense_layers=0),
    "dense": tiny_config(model_type="lfm2", layer_types=[A, C, C, A]),
    "all-conv": tiny_config(layer_types=[C, C, C, C]),
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_tensor_has_a_group_and_the_groups_match_the_formula(config):
    model = random_model(config)
    for name, _ in [*model.named_parameters(), *model.named_buffers()]:
        if not name.startswith("rope."):
            assert vc.group_of(name) in GROUPS
            assert vc.group_of(f"model.{name}") == vc.group_of(name)  # checkpoint names too
    groups = vc.parameter_groups(model)
    assert groups == count_parameters(config).by_group  # from the tensors == from the config
    assert sum(t for t, _ in groups.values()) == sum(p.numel() for p in model.parameters())


def test_group_of_examples_and_bad_names():
    assert vc.group_of("model.layers.3.feed_forward.experts.5.w1.weight") == "experts"
    assert vc.group_of("layers.3.feed_forward.gate.weight") == "router"
    assert vc.group_of("layers.3.feed_forward.expert_bias") == "router"
    assert vc.group_of("layers.0.feed_forward.w2.weight") == "dense_mlp"
    assert vc.group_of("layers.2.self_attn.q_layernorm.weight") == "norms"
    assert vc.group_of("layers.2.self_attn.out_proj.weight") == "attention"
    assert vc.group_of("layers.1.conv.conv.weight") == "conv"
    assert vc.group_of("embedding_norm.weight") == "norms"
    assert vc.group_of("model.layers.4.feed_forward.experts.gate_up_proj") == "experts"  # fused layout
    with pytest.raises(ValueError, match="expected an LFM2 tensor name"):
        vc.group_of("layers.0.mystery.weight")


def test_active_experts_are_k_of_e():
    config = tiny_config()
    groups = vc.parameter_groups(random_model(config))
    total, active = groups["experts"]
    assert active * config.num_experts == total * config.num_experts_per_tok
    assert all(t == a for g, (t, a) in groups.items() if g != "experts")


def test_plot_parameter_groups_drops_empty_groups():
    counts = {"tiny": count_parameters(tiny_config(model_type="lfm2")).by_group,
              "8B": count_parameters(LFM2Config()).by_group}
    data, fig = vc.plot_parameter_groups(counts)
    assert len(fig.axes) == 2
    assert "experts" not in data["tiny"] and "router" not in data["tiny"] and "lm_head" not in data["tiny"]
    assert data["8B"]["experts"] == counts["8B"]["experts"]


def test_layer_pattern():
    config = tiny_config(layer_types=[C, A, C, A], num_dense_layers=1)
    assert vc.layer_pattern(config) == [("conv", "dense"), ("attention", "moe"), ("conv", "moe"),
                                        ("attention", "moe")]
    dense = tiny_config(model_type="lfm2", layer_types=[A, C, C, A])
    assert [f for _, f in vc.layer_pattern(dense)] == ["dense"] * 4
    data, fig = vc.plot_layer_pattern({"tiny": config, "8B": LFM2Config()})
    assert len(data["8B"]) == 24 and [i for i, (m, _) in enumerate(data["8B"]) if m == "attention"] == [2, 6, 10, 14, 18, 21]
    assert [f for _, f in data["8B"]] == ["dense"] * 2 + ["moe"] * 22


@pytest.mark.parametrize("config", [tiny_config(), tiny_config(layer_types=[C, C, C, C]),
                                    tiny_config(layer_types=[A, A, A, A])], ids=["mixed", "all-conv", "all-attn"])
@torch.no_grad()
def test_cache_budget_equals_the_package_cache(config):
    model = random_model(config)
    lengths = [1, 5, 12]
    budget = vc.cache_budget(config, lengths, bytes_per_value=4)  # the model runs in fp32
    for T, hybrid in zip(lengths, budget["hybrid"]):
        cache = model.new_cache()
        model(torch.randint(0, config.vocab_size, (1, T)), cache=cache)
        assert sum(cache.memory_bytes().values()) == hybrid
    per_layer = 2 * config.num_key_value_heads * config.head_dim * 4
    assert budget["all_attention"] == [config.num_hidden_layers * per_layer * T for T in lengths]


def test_design_budget_of_lfm2_8b_a1b():
    data, fig = vc.plot_design_budget(LFM2Config(), max_context=4096)
    assert (round(data["total"] / 1e9, 2), round(data["active"] / 1e9, 2)) == \
        (published.TOTAL_PARAMETERS_B, published.ACTIVE_PARAMETERS_B)
    assert data["kv_bytes_per_token"] == 6 * 2 * 8 * 64 * 2  # 12 KiB per token in bf16
    assert data["conv_state_bytes"] == 18 * 2048 * 2 * 2
    assert data["context"][0] == 0 and data["context"][-1] == 4096


def test_file_layout_covers_the_file(tmp_path):
    model = random_model(tiny_config())
    folder = save_model(model, tmp_path / "ckpt")
    raw = (folder / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data, fig = vc.plot_file_layout(header, n, len(raw))
    assert sum(data["bytes_by_group"].values()) == len(raw)
    assert data["spans"][0][0] == 8 + n and data["spans"][-1][1] == len(raw)
    assert all(a[1] == b[0] for a, b in zip(data["spans"], data["spans"][1:]))  # back to back
    expected = {}
    for name, t in model.state_dict().items():
        expected[vc.group_of(name)] = expected.get(vc.group_of(name), 0) + t.numel() * t.element_size()
    assert {g: b for g, b in data["bytes_by_group"].items() if g != "header"} == expected
