"""Chapter 05's figures and explorer: head mapping, attention maps, cache sizes."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lfm2_edu import Capture, LFM2Config  # noqa: E402
from lfm2_edu.viz import attention as attn_viz  # noqa: E402
from reference import tiny_config  # noqa: E402
from test_cache import random_model  # noqa: E402
from test_viz_conv import TextTokenizer  # noqa: E402

C, A = "conv", "full_attention"


def test_kv_head_of_each_query_head():
    assert attn_viz.kv_head_of(32, 8).tolist() == [h // 4 for h in range(32)]
    assert attn_viz.kv_head_of(4, 4).tolist() == [0, 1, 2, 3]  # multi-head attention
    assert attn_viz.kv_head_of(6, 1).tolist() == [0] * 6  # multi-query attention
    with pytest.raises(ValueError, match="divisor"):
        attn_viz.kv_head_of(6, 4)


def test_head_mapping_groups_consecutive_heads():
    data, fig = attn_viz.head_mapping(32, 8)
    plt.close(fig)
    for j in range(8):  # kv head j serves j*g .. j*g+g-1
        assert (data.kv_of_head == j).nonzero().flatten().tolist() == list(range(4 * j, 4 * j + 4))


@torch.no_grad()
def test_package_attention_uses_the_mapping():
    """The probabilities of query head h are computed from the keys of kv head kv_head_of(h)."""
    config = tiny_config(num_attention_heads=4, num_key_value_heads=2)
    model = random_model(config)
    ids = torch.randint(0, config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(3))
    cap = Capture("layers.1.attn.*")
    model(ids, capture=cap)
    q, k, probs = cap["layers.1.attn.q"][0], cap["layers.1.attn.k"][0], cap["layers.1.attn.probs"][0]
    kv = attn_viz.kv_head_of(4, 2)
    for h in range(4):
        scores = q[h] @ k[kv[h]].T / config.head_dim ** 0.5
        scores = scores.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
        assert torch.allclose(scores.softmax(-1), probs[h], atol=1e-6)


def test_attention_heads_grid():
    probs = torch.rand(8, 5, 5).tril().softmax(-1)
    tokens = list("abcde")
    data, fig = attn_viz.attention_heads(probs, tokens, n_kv_heads=2, layer=3)
    plt.close(fig)
    assert data.grid == [[0, 1, 2, 3], [4, 5, 6, 7]] and data.layer == 3
    assert torch.equal(data.probs, probs) and data.kv_of_head.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    data, fig = attn_viz.attention_heads(torch.rand(32, 5, 5).softmax(-1), tokens, n_kv_heads=8, layer=0)
    plt.close(fig)
    assert data.grid[7] == [28, 29, 30, 31]
    with pytest.raises(ValueError, match="tokens"):
        attn_viz.attention_heads(probs, tokens[:4], n_kv_heads=2, layer=3)


def test_kv_cache_size_of_lfm2_8b_a1b():
    s = attn_viz.kv_cache_size(LFM2Config(), "LFM2-8B-A1B")  # bf16
    assert (s.attention_layers, s.conv_layers) == (6, 18)
    assert s.gqa_bytes_per_token == 6 * 2 * 8 * 64 * 2 == 12 * 1024
    assert s.mha_bytes_per_token == 6 * 2 * 32 * 64 * 2 == 48 * 1024
    assert s.conv_state_bytes == 18 * 2048 * 2 * 2


@torch.no_grad()
@pytest.mark.parametrize("layer_types,nkv", [([C, A, C, A], 2), ([A, A, A, A], 1), ([C, C, C, C], 4)])
def test_kv_cache_size_is_what_the_cache_holds(layer_types, nkv):
    config = tiny_config(model_type="lfm2", layer_types=layer_types, num_key_value_heads=nkv)
    model = random_model(config)
    cache = model.new_cache()
    model(torch.randint(0, config.vocab_size, (1, 7)), cache=cache)
    s = attn_viz.kv_cache_size(config, bytes_per_value=4)  # fp32 model
    held = cache.memory_bytes()
    assert held["full_attention"] == 7 * s.gqa_bytes_per_token
    assert held["conv"] == s.conv_state_bytes
    assert s.mha_bytes_per_token == s.gqa_bytes_per_token * config.num_attention_heads // nkv


def test_kv_cache_growth_curves():
    sizes = [attn_viz.kv_cache_size(LFM2Config(), "8B"), attn_viz.kv_cache_size(tiny_config(), "tiny")]
    data, fig = attn_viz.kv_cache_growth(sizes, max_tokens=1000)
    plt.close(fig)
    assert data.tokens[0] == 1 and data.tokens[-1] == 1000 and (data.tokens[1:] > data.tokens[:-1]).all()
    eight = data.curves["8B"]
    assert (eight["GQA K/V"] == data.tokens * 12 * 1024).all()
    assert (eight["MHA K/V"] == 4 * eight["GQA K/V"]).all()
    assert (eight["conv states"] == sizes[0].conv_state_bytes).all()


def test_attention_rows_html_escapes_and_shows_the_past_only():
    probs = torch.rand(4, 3, 3).tril().softmax(-1)
    tokens = ["<s>", "a&b", "<script>"]
    out = attn_viz.attention_rows_html(probs, tokens, t=1, n_kv_heads=2)
    assert "<script>" not in out and "&lt;s&gt;" in out and "a&amp;b" in out
    assert out.count("kv head") == 2 and all(f"head {h}<" in out for h in range(4))
    assert "&lt;script&gt;" not in out  # token 2 is in the future of query 1
    assert out.count("<span title=") == 4 * 2  # 4 heads x tokens 0..1
    with pytest.raises(ValueError, match="query position"):
        attn_viz.attention_rows_html(probs, tokens, t=3, n_kv_heads=2)


def test_attention_explorer_follows_the_text_box():
    pytest.importorskip("ipywidgets")
    config = tiny_config()
    model = random_model(config)
    box = attn_viz.attention_explorer(model, TextTokenizer(), "x<z")
    text_box, pickers, view = box.children
    layer_pick, token_pick = pickers.children
    assert [v for _, v in layer_pick.options] == [1, 3]
    assert token_pick.value == 3 and "&lt;</span>" in view.value and "<s>" not in view.value
    token_pick.value = 1
    assert "&lt;</span>" not in view.value  # the future (token 2, '<') is not shown
    layer_pick.value = 3
    expected = attn_viz.attention_rows_html(box.state["capture"]["layers.3.attn.probs"][0], box.state["tokens"], 1,
                                            config.num_key_value_heads)
    assert view.value == expected
    text_box.value = "a new text"  # typing re-runs the model on the new text
    assert box.state["ids"] == TextTokenizer().encode("a new text") and token_pick.value == 10
    cap = Capture("layers.3.attn.probs")
    model(torch.tensor([box.state["ids"]]), capture=cap)
    assert torch.equal(box.state["capture"]["layers.3.attn.probs"], cap["layers.3.attn.probs"])
    assert view.value == attn_viz.attention_rows_html(cap["layers.3.attn.probs"][0], box.state["tokens"], 10,
                                                      config.num_key_value_heads)


def test_attention_explorer_needs_an_attention_layer():
    model = random_model(tiny_config(model_type="lfm2", layer_types=[C, C, C, C]))
    with pytest.raises(ValueError, match="at least one attention layer"):
        attn_viz.attention_explorer(model, TextTokenizer(), "ab")
