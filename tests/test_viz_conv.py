"""Chapter 04's figures and explorer: the data they draw is what the conv block computes."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lfm2_edu import Capture  # noqa: E402
from lfm2_edu.viz import conv as conv_viz  # noqa: E402
from lfm2_edu.viz import style  # noqa: E402
from reference import tiny_config  # noqa: E402
from test_cache import random_model  # noqa: E402

C, A = "conv", "full_attention"


def run(model, T=9, seed=0):
    ids = torch.randint(0, model.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(seed))
    cap = Capture("layers.*.conv.*")
    with torch.no_grad():
        model(ids, capture=cap)
    return ids, cap


def test_tap_labels():
    assert conv_viz.tap_labels(3) == ["t-2", "t-1", "t"]
    assert conv_viz.tap_labels(4) == ["t-3", "t-2", "t-1", "t"]


def test_conv_weights_are_the_kernels():
    config = tiny_config(layer_types=[C, A, C, C], conv_L_cache=4)
    model = random_model(config)
    data, fig = conv_viz.conv_weights(model)
    plt.close(fig)
    assert data.layers == [0, 2, 3] and data.layer == 2  # the middle conv layer by default
    assert torch.equal(data.weight, model.layers[2].conv.conv.weight[:, 0].detach())
    assert data.weight.shape == (config.hidden_size, 4) and data.taps == ["t-3", "t-2", "t-1", "t"]
    for row, i in enumerate(data.layers):
        expected = model.layers[i].conv.conv.weight[:, 0].abs().mean(0)
        assert torch.allclose(data.tap_mean_abs[row], expected)
    data0, fig = conv_viz.conv_weights(model, layer=0, max_channels=10)
    plt.close(fig)
    assert torch.equal(data0.weight, model.layers[0].conv.conv.weight[:10, 0].detach())
    assert torch.allclose(data0.tap_mean_abs, data.tap_mean_abs)  # over all channels, whatever is drawn
    with pytest.raises(ValueError, match="conv layers"):
        conv_viz.conv_weights(model, layer=1)


def test_no_conv_layer_is_a_clear_error():
    model = random_model(tiny_config(model_type="lfm2", layer_types=[A, A, A, A]))
    with pytest.raises(ValueError, match="at least one conv layer"):
        conv_viz.conv_weights(model)
    with pytest.raises(ValueError, match="at least one conv layer"):
        conv_viz.conv_explorer(model, TextTokenizer(), "abc")


def test_conv_gates_are_the_captured_B_and_C():
    model = random_model(tiny_config())
    ids, cap = run(model)
    tokens = [f"t{j}" for j in range(9)]
    data, fig = conv_viz.conv_gates(cap, 0, tokens, max_channels=20)
    plt.close(fig)
    assert torch.equal(data.channels, torch.arange(20))
    assert torch.equal(data.B, cap["layers.0.conv.B"][0, :, :20])
    assert torch.equal(data.C, cap["layers.0.conv.C"][0, :, :20])
    data, fig = conv_viz.conv_gates(cap, 2, tokens, max_channels=1000)  # all channels
    plt.close(fig)
    assert data.B.shape == (9, model.config.hidden_size)
    with pytest.raises(ValueError, match="token strings"):
        conv_viz.conv_gates(cap, 0, tokens[:-1])


def test_conv_token_view_is_the_convolution_of_one_token():
    model = random_model(tiny_config(conv_L_cache=3))
    ids, cap = run(model)
    w = model.layers[2].conv.conv.weight[:, 0].detach()  # (H, L)
    Bx = cap["layers.2.conv.Bx"][0]  # (T, H)
    for t in (0, 1, 5):
        view = conv_viz.conv_token_view(cap, 2, t)
        assert list(view) == list(conv_viz.STREAMS)
        expected = sum(w[:, j] * Bx[t - 2 + j] for j in range(3) if t - 2 + j >= 0)  # causal, zero-padded
        assert torch.allclose(view["conv_out"], expected, atol=1e-6)
        assert torch.allclose(view["Bx"], view["B"] * view["x"], atol=1e-6)
        assert torch.allclose(view["y"], view["C"] * view["conv_out"])
    assert conv_viz.conv_token_view(cap, 2, 3, max_channels=5)["y"].shape == (5,)
    with pytest.raises(ValueError, match="position"):
        conv_viz.conv_token_view(cap, 2, 9)
    plt.close(conv_viz.plot_conv_token(conv_viz.conv_token_view(cap, 2, 3), 2, "<tok>"))


def test_sentence_html_escapes_and_highlights():
    out = conv_viz.sentence_html(["a", "<b>", "&c", "d"], t=2, window=1)
    assert "&lt;b&gt;" in out and "&amp;c" in out and "<span" in out
    spans = out.split("<span")[1:]
    assert style.OKABE_ITO["yellow"] in spans[2] and style.TINTS[1] in spans[1]  # the token, the window before it
    assert "background" not in spans[0] + spans[3]


class TextTokenizer:
    """What the explorers need: a character per token after bos (1), and its text ('<' needs escaping)."""

    def encode(self, text):
        return [1] + [2 + ord(c) % 90 for c in text]

    def tokens(self, ids, visible_whitespace=False):
        return ["<s>" if i == 1 else chr(i - 2) if chr(i - 2) in "<>&" else f"t{i}" for i in ids]


def test_conv_explorer_follows_the_text_box_and_escapes():
    pytest.importorskip("ipywidgets")
    model = random_model(tiny_config())
    box = conv_viz.conv_explorer(model, TextTokenizer(), "a&b<", max_channels=16)
    text_box, pickers, sentence, out = box.children
    layer_pick, token_pick = pickers.children
    assert [v for _, v in layer_pick.options] == [0, 2]
    assert token_pick.value == 4 and len(token_pick.options) == 5  # bos + 4 characters, the last one picked
    assert "&lt;s&gt;" in sentence.value and "<s>" not in sentence.value
    token_pick.value = 2
    assert "&amp;" in sentence.value
    layer_pick.value = 2
    ids = torch.tensor([TextTokenizer().encode("a&b<")])
    cap = Capture("layers.2.conv.*")
    model(ids, capture=cap)
    assert torch.equal(box.state["capture"]["layers.2.conv.B"], cap["layers.2.conv.B"])  # what it shows: this text

    text_box.value = "a longer text"  # typing a new text re-runs the model on it
    assert len(token_pick.options) == 14 and token_pick.value == 13
    assert box.state["ids"] == TextTokenizer().encode("a longer text")
    assert box.state["capture"]["layers.2.conv.B"].shape[1] == 14
    text_box.value = "x" * (conv_viz.EXPLORER_MAX_TOKENS + 10)  # too long: cut, and it says so
    assert len(token_pick.options) == conv_viz.EXPLORER_MAX_TOKENS
    assert f"first {conv_viz.EXPLORER_MAX_TOKENS} of {conv_viz.EXPLORER_MAX_TOKENS + 11} tokens" in sentence.value
    plt.close("all")


