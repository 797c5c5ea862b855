"""The MoE figure and explorer (chapter 06) draw what the router decided."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lfm2_edu import Capture  # noqa: E402
from lfm2_edu.viz.moe import plot_router_scores, router_explorer  # noqa: E402
from reference import tiny_config  # noqa: E402
from test_cache import random_model  # noqa: E402


class FakeTokenizer:
    """Just what the explorer needs: ids and readable pieces."""

    def encode(self, text):
        return [1 + ord(c) % 90 for c in text]

    def tokens(self, ids, visible_whitespace=False):
        return [f"<{i}>" for i in ids]


@torch.no_grad()
def routed(layer=2, T=7):
    model = random_model(tiny_config())
    ids = torch.randint(0, model.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    cap = Capture(f"layers.{layer}.moe.*")
    model(ids, capture=cap)
    return model, {name.rsplit(".", 1)[1]: cap[name][0] for name in cap.names()}


def test_router_figure_draws_scores_and_boxes_the_chosen_experts():
    model, r = routed()
    bias = model.layers[2].feed_forward.expert_bias
    tokens = [f"t{i}" for i in range(7)]
    data, fig = plot_router_scores(tokens, r["scores"], r["selected"], r["weights"], bias, title="layer 2")
    assert np.allclose(data.scores, r["scores"].numpy()) and data.scores.shape == (7, 6)
    assert np.array_equal(data.selected, r["selected"].numpy())
    assert np.allclose(data.expert_bias, bias.numpy())
    # exactly k boxes per row, on the experts the model chose
    assert (data.chosen_mask.sum(1) == 2).all()
    assert all(data.chosen_mask[t, e] for t in range(7) for e in r["selected"][t].tolist())
    heat = next(ax for ax in fig.axes if ax.images)
    assert heat.images[0].get_array().shape == (7, 6)
    assert len(heat.patches) == 7 * 2  # one red box per chosen (token, expert)
    assert [t.get_text() for t in heat.get_yticklabels()] == tokens
    assert any(ax.get_ylabel() == "sigmoid score" for ax in fig.axes)  # the colour bar
    strip = next(ax for ax in fig.axes if ax.get_ylabel() == "expert\nbias")
    assert len(strip.patches) == 6  # one bar per expert
    plt.close(fig)


def test_router_figure_without_bias_and_bad_shapes():
    _, r = routed()
    data, fig = plot_router_scores(["a"] * 7, r["scores"], r["selected"], r["weights"])
    assert data.expert_bias is None and len(fig.axes) == 2  # heatmap and colour bar
    plt.close(fig)
    with pytest.raises(ValueError, match="expected 6 tokens"):
        plot_router_scores(["a"] * 6, r["scores"][:6], r["selected"], r["weights"])


def test_explorer_lists_the_moe_layers_and_says_when_there_are_none():
    model = random_model(tiny_config())  # layer 0 dense, layers 1-3 MoE
    box = router_explorer(model, FakeTokenizer(), "abc de")
    dropdown = box.children[1].children[0]
    assert [value for _, value in dropdown.options] == [1, 2, 3]
    assert "[0]" in box.children[1].children[1].value  # the dense layer is named
    dense = random_model(tiny_config(model_type="lfm2"))
    assert "no MoE layer" in router_explorer(dense, FakeTokenizer(), "abc").value
    plt.close("all")


def test_explorer_routes_the_typed_text_at_the_chosen_layer():
    model = random_model(tiny_config())
    tok = FakeTokenizer()
    widget = router_explorer(model, tok, "abc de")
    text, dropdown = widget.children[0], widget.children[1].children[0]
    assert widget.state["tokens"] == tok.tokens(tok.encode("abc de")) and widget.state["layer"] == 1
    text.value = "a longer text"  # typing re-routes: the figure shows the new tokens
    ids = tok.encode("a longer text")
    assert widget.state["data"].tokens == tok.tokens(ids)
    dropdown.value = 3  # another layer: that layer's own routing, as the model computes it
    cap = Capture("layers.3.moe.selected")
    model(torch.tensor([ids]), capture=cap)
    assert np.array_equal(widget.state["data"].selected, cap["layers.3.moe.selected"][0].numpy())
    text.value = "x" * 70  # too long: cut, and it says so
    assert len(widget.state["data"].tokens) == 64 and "first 64 of 70 tokens" in widget.children[1].children[1].value
    text.value = ""  # no tokens: a note, no figure
    assert widget.state["data"] is None
    plt.close("all")
