"""The model's own behaviour: input checks, capture points, parameter counts."""

import pytest
import torch

from lfm2_edu import CAPTURE_POINTS, Capture, LFM2Config, LFM2Model, count_parameters
from reference import tiny_config
from test_cache import random_model


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config())


def test_output_is_logits(model):
    ids = torch.randint(0, 97, (3, 5))
    out = model(ids)
    assert out.logits.shape == (3, 5, 97)
    assert out.cache is None


@pytest.mark.parametrize("bad, error, message", [
    (torch.zeros(5, dtype=torch.long), ValueError, "expected 2 dimensions"),
    (torch.zeros(1, 5), TypeError, "expected an integer dtype"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "expected at least one token"),
    (torch.full((1, 3), 97), ValueError, r"expected token ids in \[0, 97\), found ids from 97 to 97"),
    (torch.full((1, 3), -1), ValueError, "found ids from -1"),
    ([1, 2, 3], TypeError, "expected a torch.Tensor"),
])
def test_bad_input_ids(model, bad, error, message):
    with pytest.raises(error, match=message):
        model(bad)


def test_prompt_longer_than_the_model_allows(model):
    ids = torch.zeros(1, 257, dtype=torch.long)
    with pytest.raises(ValueError, match=r"at most max_position_embeddings=256 tokens, found 257"):
        model(ids)
    cache = model.new_cache()
    model(torch.zeros(1, 250, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"found 260 \(250 cached \+ 10 new\)"):
        model(torch.zeros(1, 10, dtype=torch.long), cache=cache)


def test_wrong_device(model):
    with pytest.raises(ValueError, match="expected a tensor on the model's device cpu, found one on meta"):
        model(torch.zeros(1, 3, dtype=torch.long, device="meta"))


def test_bad_attention_mask_shape(model):
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(1, 3\)"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4))


@torch.no_grad()
def test_capture_records_only_what_is_asked(model):
    ids = torch.randint(0, 97, (2, 6))
    plain = model(ids).logits
    cap = Capture("layers.1.moe.*", "layers.0.conv.B", "layers.0.conv.x", "layers.0.conv.Bx")
    captured = model(ids, capture=cap).logits
    assert torch.equal(plain, captured)  # capturing changes nothing
    assert sorted(cap.names()) == sorted(["layers.0.conv.B", "layers.0.conv.x", "layers.0.conv.Bx"] +
                                         [f"layers.1.moe.{k}" for k in
                                          ("router_logits", "scores", "selection_scores", "selected", "weights")])
    assert torch.equal(cap["layers.0.conv.Bx"], cap["layers.0.conv.B"] * cap["layers.0.conv.x"])
    assert cap["layers.1.moe.selected"].shape == (2, 6, 2)
    scores = torch.sigmoid(cap["layers.1.moe.router_logits"])
    assert torch.allclose(cap["layers.1.moe.scores"], scores)
    bias = model.layers[1].feed_forward.expert_bias
    assert torch.allclose(cap["layers.1.moe.selection_scores"], scores + bias)
    with pytest.raises(KeyError, match="was not recorded"):
        cap["layers.2.moe.selected"]


@torch.no_grad()
def test_every_capture_point_is_documented(model):
    cap = Capture()  # everything
    model(torch.randint(0, 97, (1, 4)), capture=cap)
    documented = set(CAPTURE_POINTS)
    for name in cap.names():
        pattern = ".".join("{i}" if part.isdigit() else part for part in name.split("."))
        assert pattern in documented, f"{name} is recorded but not listed in CAPTURE_POINTS"
    assert len(cap) > 0


@torch.no_grad()
def test_attention_probabilities_are_causal_distributions(model):
    cap = Capture("layers.1.attn.probs")
    model(torch.randint(0, 97, (2, 7)), capture=cap)
    probs = cap["layers.1.attn.probs"]  # (B, nh, T, S)
    assert probs.shape == (2, 4, 7, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 7))
    assert probs.triu(diagonal=1).abs().max() == 0  # no token looks ahead


def test_parameter_counts_match_the_modules():
    for config in [tiny_config(), tiny_config(model_type="lfm2", conv_bias=True),
                   tiny_config(tie_word_embeddings=False, use_expert_bias=False)]:
        model = LFM2Model(config)
        counts = count_parameters(model)
        assert counts.total == sum(p.numel() for p in model.parameters())
        E, k = config.num_experts, config.num_experts_per_tok
        expert_params = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
        inactive = (expert_params // E) * (E - k) if config.is_moe else 0
        assert counts.total - counts.active == inactive


def test_lfm2_8b_a1b_parameter_counts():
    """LFM2-8B-A1B is published as 8.3B parameters with 1.5B active per token."""
    config = LFM2Config()  # the defaults are LFM2-8B-A1B's config
    counts = count_parameters(config)
    with torch.device("meta"):
        meta = LFM2Model(config)
    assert counts.total == sum(p.numel() for p in meta.parameters())
    assert 8.3e9 <= counts.total < 8.4e9
    assert 1.5e9 <= counts.active < 1.6e9
