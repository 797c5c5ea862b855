"""The routing figures (chapters 09-11) draw the data they return, and the explorer works."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from lfm2_edu import routing as R  # noqa: E402
from lfm2_edu.viz import routing as V  # noqa: E402
from lfm2_edu.viz import style  # noqa: E402
from reference import tiny_config  # noqa: E402
from test_cache import random_model  # noqa: E402


class FakeTokenizer:
    """Just what the explorer needs: ids and readable pieces (one needs HTML escaping)."""

    def encode(self, text):
        return [1 + ord(c) % 90 for c in text]

    def tokens(self, ids, visible_whitespace=False):
        return ["<b>" if i == 1 + ord("<") % 90 else f"t{i}" for i in ids]


@pytest.fixture(scope="module")
def routed():
    model = random_model(tiny_config())  # layer 0 dense, layers 1-3 MoE, 6 experts top-2
    ids = list(range(2, 12))
    return model, ids, R.route_tokens(model, FakeTokenizer(), ids)


def test_expert_colours_come_from_the_style_and_repeat():
    hues = len(style.EXPERT_HUES)
    for E in (6, 16):
        colours = V.expert_colours(E)
        assert colours.shape == (E, 4) and len({to_hex(c) for c in colours}) == E
    assert np.array_equal(V.expert_colours(64)[hues], V.expert_colours(64)[0])  # then they repeat: ids are printed


def test_token_routing_colours_each_token_by_its_first_choice(routed):
    _, ids, table = routed
    data, fig = V.plot_token_routing(table)
    assert data.layers == [0, 1, 2, 3] and data.first_choice[0] is None  # the dense layer, drawn grey
    for j, i in enumerate(table.layers):
        assert data.first_choice[i] == [table.experts[t][j][0] for t in range(len(ids))]
    ax = fig.axes[0]
    assert len(ax.patches) == 4 * len(ids)  # one cell per token and layer
    colours = V.expert_colours(6)
    box = ax.patches[len(ids) * 2 + 3]  # layer 2, token 3
    assert np.allclose(box.get_facecolor(), colours[data.first_choice[2][3]])
    assert to_hex(ax.patches[0].get_facecolor()) == to_hex(V.DENSE_COLOUR)
    assert [t.get_text() for t in ax.get_xticklabels()] == table.tokens
    assert [t.get_text() for t in ax.texts][len(ids) + 3] == str(data.first_choice[2][3])  # its id, printed
    plt.close(fig)


def test_token_routing_wraps_long_texts(routed):
    _, ids, table = routed
    data, fig = V.plot_token_routing(table, max_tokens=4)
    assert len(fig.axes) == 3  # 10 tokens: blocks of 4, 4 and 2
    assert [len(ax.get_xticklabels()) for ax in fig.axes] == [4, 4, 2]
    assert sum(len(ax.patches) for ax in fig.axes) == 4 * len(ids)
    plt.close(fig)


def test_token_scores_figure(routed):
    _, _, table = routed
    view = table.layer(2)
    data, fig = V.plot_token_scores(view, 4, table.tokens[4], 2)
    assert np.allclose(data.scores, view["scores"][4].numpy())
    assert np.allclose(data.selection_scores, view["selection_scores"][4].numpy())
    assert data.selected.tolist() == view["selected"][4].tolist()
    assert data.override == pytest.approx(float(R.bias_override(view["scores"][4], view["selected"][4])))
    assert data.margin == pytest.approx(float(R.selection_margin(view["selection_scores"][4], 2)))
    ax = fig.axes[0]
    chosen = [p for p in ax.patches if to_hex(p.get_facecolor()) == to_hex(style.HIGHLIGHT)]
    assert len(ax.patches) == 6 and len(chosen) == 2  # one bar per expert, the chosen k highlighted
    threshold = ax.lines[0].get_ydata()[0]
    assert threshold == pytest.approx(np.sort(data.selection_scores)[-2])
    plt.close(fig)


def test_entropy_margin_and_bias_ablation_figures(routed):
    model, ids, table = routed
    ent = torch.stack([R.router_entropy(table.layer(i)["scores"]) for i in table.layers])
    mar = torch.stack([R.selection_margin(table.layer(i)["selection_scores"], 2) for i in table.layers])
    data, fig = V.plot_entropy_margin(table.tokens, table.layers, ent, mar)
    assert data["entropy"].shape == (3, len(ids)) and np.allclose(data["margin"], mar.numpy())
    assert fig.axes[0].images[0].get_array().shape == (3, len(ids))
    plt.close(fig)
    with pytest.raises(ValueError, match="expected"):
        V.plot_entropy_margin(table.tokens[:-1], table.layers, ent, mar)
    ab = R.bias_ablation(model, ids)
    data, fig = V.plot_bias_ablation(table.tokens, ab)
    assert data["layers"] == [1, 2, 3]
    assert np.array_equal(data["rerouted"][1], ab["rerouted"][2].numpy())
    assert np.allclose(data["kl"], ab["kl"].numpy())
    assert len(fig.axes[1].patches) == len(ids)  # one KL bar per token
    plt.close(fig)


def test_routing_html_escapes_and_marks_dense_layers():
    table = R.route_tokens(random_model(tiny_config()), FakeTokenizer(), FakeTokenizer().encode("a<b"))
    page = V.routing_html(table, layer=2, token=1)
    assert "&lt;b&gt;" in page and "<b>" not in page.replace("<b>layer", "")  # the token is escaped
    assert "layer 0 dense" in page and page.count("dense layer: no router") == 3
    assert page.count("outline:2px") == 4  # the picked token, in each of the 4 layers


def test_explorer_updates_with_text_layer_and_token():
    model = random_model(tiny_config())
    widget = V.route_explorer(model, FakeTokenizer(), "hello", layer=2, token=1)
    box, (layer_pick, token_pick), coloured, out, stats = widget.children[0], widget.children[1].children, \
        *widget.children[2:]
    assert [v for _, v in layer_pick.options] == [0, 1, 2, 3] and "(dense)" in layer_pick.options[0][0]
    assert token_pick.value == 1 and len(token_pick.options) == 5
    assert "at layer 2" in stats.value and "Zeroing layer 2" in stats.value
    assert 2 in widget.state["ablations"]
    layer_pick.value = 0
    assert "layer 0 is dense" in stats.value
    layer_pick.value = 3
    box.value = "a longer text"
    assert len(token_pick.options) == 13 and token_pick.value == 12
    assert widget.state["table"].token_ids == FakeTokenizer().encode("a longer text")
    assert widget.state["ablations"] == {3: widget.state["ablations"][3]}  # recomputed for the new text
    plt.close("all")


def test_explorer_without_bias_and_on_a_dense_model():
    widget = V.route_explorer(random_model(tiny_config(use_expert_bias=False)), FakeTokenizer(), "abc")
    assert "no expert_bias" in widget.children[-1].value
    dense = V.route_explorer(random_model(tiny_config(model_type="lfm2")), FakeTokenizer(), "abc")
    assert "no MoE layer" in dense.value
    plt.close("all")


# ---------------------------------------------------------------------------------- chapter 10
def fake_log():
    return {"steps": [0, 10, 20], "load": [{"2": [4, 4, 4, 4], "3": [16, 0, 0, 0]}] * 3,
            "expert_bias": [{"2": [0.0, 0.1, -0.1, 0.0], "3": [0.2, 0.0, 0.0, -0.2]}] * 3}


def test_balance_over_training_figure():
    runs = {"with": R.log_balance(fake_log()), "without": R.log_balance(fake_log())}
    data, fig = V.plot_balance_over_training(runs, num_experts=4, k=2)
    assert data["ceiling"] == 1.0  # E/k - 1
    ax = fig.axes[0]
    assert len(ax.lines) == 2 + 1 + 1  # a line per layer, the mean, the ceiling (no config: no floor)
    assert data["noise_floor"] == {"with": None, "without": None}
    assert list(ax.lines[1].get_ydata()) == pytest.approx([3.0] * 3)  # layer 3: one expert takes all
    assert list(ax.lines[2].get_ydata()) == pytest.approx([1.5] * 3)  # the mean
    plt.close(fig)


def test_load_histograms_and_bias_heatmap():
    layers, load = R.log_table(fake_log(), "load")
    data, fig = V.plot_load_histograms({"with": (layers, load), "without": (layers, load)}, k=2)
    assert fig.axes[1].patches[0].get_height() == pytest.approx(1.0)  # layer 3, expert 0: all slots
    assert "MaxVio 3.00" in fig.axes[1].get_title()
    floor = R.load_noise_floor(load[1], 2)
    assert data["noise_floor"]["with"][1] == floor and data["runs"]["with"][0] == [2, 3]
    assert fig.axes[1].get_title().endswith(f"MaxVio {R.format_max_violation(3.0, floor)}")
    assert len(fig.axes) == 4
    plt.close(fig)
    layers, bias = R.log_table(fake_log(), "expert_bias")
    data, fig = V.plot_bias_heatmap(layers, bias)
    assert np.allclose(fig.axes[0].images[0].get_array(), bias.numpy())
    lo, hi = fig.axes[0].images[0].get_clim()
    assert lo == pytest.approx(-0.2) and hi == pytest.approx(0.2)  # centred at 0
    plt.close(fig)


# ---------------------------------------------------------------------------------- chapter 11
def test_layer_expert_load_is_relative_to_uniform():
    data, fig = V.plot_layer_expert_load([2, 3], torch.tensor([[4, 4, 4, 4], [8, 0, 4, 4]]), k=2)
    assert data["ratio"].tolist() == [[1, 1, 1, 1], [2, 0, 1, 1]]
    plt.close(fig)


def test_specialisation_figures():
    spec = {2: R.domain_specialisation({"code": torch.tensor([[0, 1], [0, 2]]), "prose": torch.tensor([[3, 2]])}, 4),
            5: R.domain_specialisation({"code": torch.tensor([[1, 2]]), "prose": torch.tensor([[3, 1]])}, 4)}
    data, fig = V.plot_domain_specialisation(spec, k=2)
    assert data["share"].shape == (2, 2, 4) and data["domains"] == ["code", "prose"]
    assert data["share"][0, 0].tolist() == [1.0, 0.5, 0.5, 0.0]
    assert fig.axes[0].images[0].norm.vcenter == pytest.approx(0.5)  # k/E is the neutral colour
    plt.close(fig)
    vocab = R.vocabulary_specialisation(torch.tensor([5, 5, 7]), torch.tensor([[0, 1], [0, 2], [3, 1]]), 4)
    data, fig = V.plot_vocabulary_specialisation(["a", "b"], vocab["share"], vocab["counts"], layer=2, k=2)
    assert data["share"][0].tolist() == [1.0, 0.5, 0.5, 0.0] and data["counts"].tolist() == [2, 1]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["'a' ×2", "'b' ×1"]
    plt.close(fig)


def test_coactivation_and_consecutive_figures():
    c = {2: R.coactivation(torch.tensor([[0, 1], [0, 2]]), 3), 3: R.coactivation(torch.tensor([[1, 2]]), 3)}
    data, fig = V.plot_coactivation(c, k=2)
    assert data["coactivation"].shape == (2, 3, 3) and data["coactivation"][0, 0].tolist() == [0.0, 0.5, 0.5]
    plt.close(fig)
    rates = {2: {"first": 0.5, "any": 0.75}, 3: {"first": 0.25, "any": 0.5}}
    data, fig = V.plot_consecutive_share(rates, R.consecutive_baseline(8, 2))
    assert data["first"] == [0.5, 0.25] and data["any"] == [0.75, 0.5]
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [0.5, 0.25, 0.75, 0.5]
    assert ax.lines[0].get_ydata()[0] == pytest.approx(0.125)
    plt.close(fig)


def test_model_comparison_figure():
    values = {"trained": {"MaxVio": [0.2, 0.3], "bits": [0.5, 0.4]}, "untrained": {"MaxVio": [1.0, 2.0], "bits": [0.1, 0.2]}}
    data, fig = V.plot_model_comparison([2, 3], values, {"MaxVio": 0.0, "bits": None})
    assert data["values"] is values and data["layers"] == [2, 3]
    first, second = fig.axes
    assert [p.get_height() for p in first.patches] == [0.2, 0.3, 1.0, 2.0]  # a bar per model and layer
    assert first.get_title() == "MaxVio" and len(first.lines) == 1 and len(second.lines) == 0  # baseline or not
    legend = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend for all panels, the baseline in it
    assert legend == ["trained", "untrained", "uniform random routing"]
    plt.close(fig)


def test_balance_over_training_draws_the_noise_floor_of_a_batch():
    log = {**fake_log(), "config": {"batch_size": 2, "seq_len": 4}}  # 8 tokens x k = 2 = 16 slots per layer
    runs = {"with": R.log_balance(log)}
    data, fig = V.plot_balance_over_training(runs, num_experts=4, k=2)
    assert data["noise_floor"]["with"] == R.max_violation_noise_floor(8, 4, 2)
    floor = fig.axes[0].lines[-1]
    assert floor.get_ydata()[0] == pytest.approx(data["noise_floor"]["with"]["p95"]) and floor.get_linestyle() == ":"
    plt.close(fig)


# ------------------------------------------------------------------- controls and explorers
def test_token_margins_figure(routed):
    _, ids, table = routed
    margin = torch.stack([R.selection_margin(table.layer(i)["selection_scores"], 2) for i in table.layers])
    override = torch.stack([R.bias_override(table.layer(i)["scores"], table.layer(i)["selected"]) for i in table.layers])
    data, fig = V.plot_token_margins(table.tokens, table.layers, margin, override)
    assert np.allclose(data["margin"], margin.numpy()) and np.allclose(data["override"], override.numpy())
    assert data["spread"]["override"] == pytest.approx(R.quantiles(override))
    assert fig.axes[0].images[0].get_array().shape == (3, len(ids))
    plt.close(fig)
    with pytest.raises(ValueError, match="expected \\(layers, tokens\\)"):
        V.plot_token_margins(table.tokens[:-1], table.layers, margin, override)


def test_rerouting_control_figure(routed):
    model, ids, _ = routed
    control = R.rerouting_control(model, torch.tensor([ids, ids[::-1]]), seeds=(0, 1))
    data, fig = V.plot_rerouting_control(control)
    assert data["layers"] == [1, 2, 3] and data["seeds"] == [0, 1]
    assert data["direct_share"] == [control["share"][i] for i in (1, 2, 3)]
    assert data["rerouted"]["random"][0] == pytest.approx(np.mean([r["rerouted"][1] for r in control["random"]]))
    assert data["kl_mean"] == {"bias zeroed": control["bias_zeroed"]["kl_mean"],
                               "random": [r["kl_mean"] for r in control["random"]]}
    assert [p.get_height() for p in fig.axes[1].patches] == pytest.approx(
        [data["kl_mean"]["bias zeroed"], *data["kl_mean"]["random"]])
    plt.close(fig)


def test_balancing_toy_figure_and_widget():
    sim = R.simulate_balancing(num_experts=6, k=2, tokens=60, steps=30, rate=0.05, skew=2.0)
    data, fig = V.plot_balancing_toy(sim)
    assert data["final_share"] == pytest.approx(sim["load"][-1].numpy() / 120)
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx(sim["max_violation"])
    assert fig.axes[0].lines[2].get_ydata()[0] == pytest.approx(sim["noise_floor"]["p95"])
    assert len(fig.axes[2].lines) == 6  # one bias line per expert
    plt.close(fig)
    widget = V.balancing_toy(num_experts=6, k=2, tokens=64, steps=40, rate=0.02)
    (rate, off, steps), (skew, tokens) = widget.children[0].children, widget.children[1].children
    assert widget.state["sim"]["settings"]["rate"] == pytest.approx(0.02) and "u = 0.02" in widget.children[-1].value
    steps.value = 60
    assert len(widget.state["sim"]["steps"]) == 60
    off.value = True  # no update: the bias never moves
    assert widget.state["sim"]["settings"]["rate"] == 0 and widget.state["sim"]["bias"].abs().max() == 0
    skew.value, tokens.value = 0.0, 512
    assert widget.state["sim"]["noise_floor"] == R.max_violation_noise_floor(512, 6, 2)
    plt.close("all")


def test_expert_html_escapes_and_the_browser_follows_its_pickers():
    model = random_model(tiny_config())
    lt = 1 + ord("<") % 90  # the token FakeTokenizer shows as "<b>"
    windows = {"code": torch.tensor([[1, lt, 5, lt, 7, 8, lt, 9]] * 2), "prose": torch.tensor([[1, 30, lt, 31, 32, 33]])}
    analysis = R.held_out_analysis(model, windows, min_count=1)
    widget = V.expert_browser(analysis, FakeTokenizer(), n_contexts=20, min_count=1)
    (layer_pick, expert_pick), page = widget.children[0].children, widget.children[1]
    assert widget.state["layer"] == 1 and widget.state["profile"]["expert"] == 0
    layer_pick.value, expert_pick.value = 3, 4
    sel = {d: analysis["selected"][d][3] for d in analysis["domains"]}
    assert widget.state["profile"] == R.expert_profile(analysis["token_ids"], sel, 4, 6, n_contexts=20, min_count=1)
    assert "layer 3, expert 4" in page.value
    # find an expert that the "<b>" token visits: its page shows the token, escaped, never as a tag
    e = int(analysis["selected"]["code"][3][0, 0, 0])
    expert_pick.value = e
    assert "&lt;b&gt;" in page.value  # shown, escaped ...
    assert page.value.count("<b>") + page.value.count("<b style") == page.value.count("</b>")  # ... never a tag
    plt.close("all")
