"""The style rules, checked on every figure function of lfm2_edu.viz (those the chapters save, as
lfm2_edu.figures finds them, and the rest) drawn on small data:
text of at least 12 pt once the figure is shrunk to a slide, no red mark beside a green one a
red-green colour-blind reader confuses, no legend told apart by hue alone, only the style's colour
maps; the layer types in the palette's colours; expert identity printed, not left to hue; no colour
chosen outside the style module. And the checker itself catches each kind of fault."""

import json
import re
import struct
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from lfm2_edu import Capture, LFM2Config, count_parameters, figures, load_tokenizer, routing, save_model  # noqa: E402
from lfm2_edu.viz import attention, checkpoint, conv, generation, model as viz_model, moe  # noqa: E402
from lfm2_edu.viz import design, norm_rope, speed, style, tokens  # noqa: E402
from lfm2_edu.viz import routing as viz_routing  # noqa: E402
from reference import tiny_config  # noqa: E402
from test_cache import random_model  # noqa: E402

VIZ = Path(style.__file__).parent


class FakeTokenizer:
    def encode(self, text):
        return [1 + ord(c) % 90 for c in text]

    def tokens(self, ids, visible_whitespace=False):
        return [f"t{i}" for i in ids]


@pytest.fixture(scope="module")
def small():
    """A random tiny LFM2-MoE (4 layers, 6 experts top-2), 10 tokens through it, and its routing."""
    config = tiny_config()
    model = random_model(config)
    ids = list(range(2, 12))
    cap = Capture("layers.*.conv.*", "layers.*.attn.probs", "layers.*.moe.*")
    with torch.no_grad():
        model(torch.tensor([ids]), capture=cap)
    return config, model, ids, cap, routing.route_tokens(model, FakeTokenizer(), ids)


def _file_layout(small, tmp_path):
    _, model, *_ = small
    raw = (save_model(model, tmp_path / "ckpt") / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return checkpoint.plot_file_layout(json.loads(raw[8:8 + n]), n, len(raw))


def _balance(small):
    config = small[0]
    steps = list(range(0, 50, 10))
    bal = {"steps": steps, "max_violation": {i: [2.0 - 0.3 * s / 10 for s in steps] for i in config.moe_layers}}
    return viz_routing.plot_balance_over_training({"with": bal, "without": bal}, config.num_experts, 2)


def _layer_load(config):
    """(layers, E) slot counts; each row a whole number of tokens of k = 2 slots."""
    return 2 * (torch.arange(len(config.moe_layers) * config.num_experts, dtype=torch.float).reshape(
        len(config.moe_layers), config.num_experts) + 1)


def _selected(small):
    config, model, ids, cap, _ = small
    return {i: cap[f"layers.{i}.moe.selected"] for i in config.moe_layers}  # (1, T, k) each


def _sampling(small):
    logits = torch.randn(97, generator=torch.Generator().manual_seed(0))
    seen = torch.zeros(97, dtype=torch.bool)
    seen[:5] = True
    return logits, seen


# One example per drawing function of the registry: the figure it draws on small data.
EXAMPLES = {
    "checkpoint.plot_design_budget": lambda s, p: checkpoint.plot_design_budget(LFM2Config()),
    "checkpoint.plot_file_layout": _file_layout,
    "checkpoint.plot_parameter_groups": lambda s, p: checkpoint.plot_parameter_groups(
        {"tiny": checkpoint.parameter_groups(s[1]), "8B": count_parameters(LFM2Config()).by_group}),
    "checkpoint.plot_layer_pattern": lambda s, p: checkpoint.plot_layer_pattern({"tiny": s[0], "8B": LFM2Config()}),
    "tokens.plot_chars_per_token": lambda s, p: tokens.plot_chars_per_token(
        load_tokenizer("tiny-lfm2-moe"), {"prose": "The cat sat on the mat.", "code": "def f(x):\n    return x"}),
    "tokens.plot_embedding_similarity": lambda s, p: tokens.plot_embedding_similarity(
        s[1].embed_tokens.weight.detach(), range(20), [f"tok{i}" for i in range(20)]),
    "norm_rope.norm_inputs": lambda s, p: norm_rope.norm_inputs(s[1], torch.tensor([s[2]]), [f"t{i}" for i in s[2]]),
    "norm_rope.rope_rotation": lambda s, p: norm_rope.rope_rotation(64, 1e6, 64),
    "conv.conv_weights": lambda s, p: conv.conv_weights(s[1]),
    "conv.conv_gates": lambda s, p: conv.conv_gates(s[3], 0, [f"t{i}" for i in s[2]]),
    "conv.plot_conv_token": lambda s, p: (None, conv.plot_conv_token(conv.conv_token_view(s[3], 0, 3), 0, "t3")),
    "attention.head_mapping": lambda s, p: attention.head_mapping(32, 8),
    "attention.attention_heads": lambda s, p: attention.attention_heads(
        s[3]["layers.1.attn.probs"][0], [f"token{i}" for i in s[2]], 2, 1),
    "attention.kv_cache_growth": lambda s, p: attention.kv_cache_growth(
        [attention.kv_cache_size(s[0], "tiny"), attention.kv_cache_size(LFM2Config(), "8B")]),
    "moe.plot_router_scores": lambda s, p: moe.plot_router_scores(
        [f"t{i}" for i in s[2]], s[3]["layers.2.moe.scores"][0], s[3]["layers.2.moe.selected"][0],
        s[3]["layers.2.moe.weights"][0], s[1].layers[2].feed_forward.expert_bias),
    "model.plot_layer_stack": lambda s, p: viz_model.plot_layer_stack(s[0]),
    "model.plot_parameter_counts": lambda s, p: viz_model.plot_parameter_counts({"tiny": s[0], "8B": LFM2Config()}),
    "model.plot_decoder_block": lambda s, p: viz_model.plot_decoder_block(LFM2Config()),
    "generation.plot_sampling_steps": lambda s, p: generation.plot_sampling_steps(*_sampling(s), lambda i: f"#{i}"),
    "generation.plot_cache_memory": lambda s, p: generation.plot_cache_memory(
        {"tiny": (s[0], 4), "8B": (LFM2Config(), 2)}, [1, 16, 256, 4096], {"tiny": {16: {"conv": 10, "full_attention": 20}}}),
    "routing.plot_token_routing": lambda s, p: viz_routing.plot_token_routing(s[4]),
    "routing.plot_token_scores": lambda s, p: viz_routing.plot_token_scores(s[4].layer(2), 3, "t5", 2),
    "routing.plot_entropy_margin": lambda s, p: viz_routing.plot_entropy_margin(
        s[4].tokens, s[4].layers, torch.stack([routing.router_entropy(s[4].layer(i)["scores"]) for i in s[4].layers]),
        torch.stack([routing.selection_margin(s[4].layer(i)["selection_scores"], 2) for i in s[4].layers])),
    "routing.plot_bias_ablation": lambda s, p: viz_routing.plot_bias_ablation(s[4].tokens, routing.bias_ablation(s[1], s[2])),
    "routing.plot_balance_over_training": lambda s, p: _balance(s),
    "routing.plot_load_histograms": lambda s, p: viz_routing.plot_load_histograms(
        {"with": (s[0].moe_layers, _layer_load(s[0])), "without": (s[0].moe_layers, _layer_load(s[0]) ** 2)}, 2),
    "routing.plot_bias_heatmap": lambda s, p: viz_routing.plot_bias_heatmap(s[0].moe_layers, torch.randn(3, 6)),
    "routing.plot_layer_expert_load": lambda s, p: viz_routing.plot_layer_expert_load(s[0].moe_layers, _layer_load(s[0]), 2),
    "routing.plot_domain_specialisation": lambda s, p: viz_routing.plot_domain_specialisation(
        {i: routing.domain_specialisation({"a": sel, "b": sel.flip(1)}, 6) for i, sel in _selected(s).items()}, 2),
    "routing.plot_vocabulary_specialisation": lambda s, p: viz_routing.plot_vocabulary_specialisation(
        ["a", "b", "c"], torch.rand(3, 6), torch.tensor([5, 4, 3]), 2, 2),
    "routing.plot_coactivation": lambda s, p: viz_routing.plot_coactivation(
        {i: routing.coactivation(sel.reshape(-1, 2), 6) for i, sel in _selected(s).items()}, 2),
    "routing.plot_consecutive_share": lambda s, p: viz_routing.plot_consecutive_share(
        {i: routing.consecutive_share(sel) for i, sel in _selected(s).items()}, routing.consecutive_baseline(6, 2)),
    "routing.plot_token_margins": lambda s, p: viz_routing.plot_token_margins(
        s[4].tokens, s[4].layers,
        torch.stack([routing.selection_margin(s[4].layer(i)["selection_scores"], 2) for i in s[4].layers]),
        torch.stack([routing.bias_override(s[4].layer(i)["scores"], s[4].layer(i)["selected"]) for i in s[4].layers])),
    "routing.plot_rerouting_control": lambda s, p: viz_routing.plot_rerouting_control(
        routing.rerouting_control(s[1], torch.tensor([s[2], s[2][::-1]]), seeds=(0, 1))),
    "design.plot_router_gradient": lambda s, p: design.plot_router_gradient(
        {"router": {"logit_grad": torch.tensor([[0.0, 1.0, 0.5], [2.0, 0.0, 0.0]])}}, 3),
    "design.plot_specialisation_by_recipe": lambda s, p: design.plot_specialisation_by_recipe(
        {"bias": {2: 0.4, 3: 0.5}, "untrained": {2: 0.1, 3: 0.12}}),
    "design.plot_experts_touched": lambda s, p: design.plot_experts_touched(
        {1: 2.0, 4: 6.5, 16: 14.0}, {1: 2.0, 4: 6.6, 16: 14.1}, 16, 2),
    "speed.plot_roofline": lambda s, p: speed.plot_roofline(
        20e9, 400e9, {"decode": (0.5, 2e9), "prefill": (60.0, 1.5e11), "roof only": (2.0, None)}),
    "speed.plot_batch_intensity": lambda s, p: speed.plot_batch_intensity(
        [1, 4, 16, 64], {"dense": [1, 4, 16, 64], "MoE": [1, 2, 5, 14]}, 20.0),
    "routing.plot_balancing_toy": lambda s, p: viz_routing.plot_balancing_toy(
        routing.simulate_balancing(num_experts=6, k=2, tokens=60, steps=30, rate=0.05, skew=2.0)),
    "routing.plot_model_comparison": lambda s, p: viz_routing.plot_model_comparison(
        [1, 2, 3], {"trained": {"MaxVio": [1, 2, 3], "entropy": [0.9, 0.8, 0.7]},
                    "untrained": {"MaxVio": [3, 3, 3], "entropy": [0.99] * 3}}, {"MaxVio": 0.5}),
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _is_styled(function) -> bool:
    """Decorated with @style.figure, under any other decorator (torch.no_grad)."""
    while function.__code__.co_name != "styled" and hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    return function.__code__.co_name == "styled"


def _figure_functions() -> set[str]:
    """Every function of lfm2_edu.viz that draws under the style, as "module.function"."""
    import importlib
    import inspect

    out = set()
    for path in VIZ.glob("*.py"):
        module = importlib.import_module(f"lfm2_edu.viz.{path.stem}")
        out |= {f"{path.stem}.{name}" for name, f in inspect.getmembers(module, inspect.isfunction)
                if f.__module__ == module.__name__ and not name.startswith("_") and _is_styled(f)}
    return out


def test_every_figure_function_has_an_example():
    saved = {f.drawn_by.removeprefix("lfm2_edu.viz.") for f in figures.all_figures()}
    assert saved <= _figure_functions(), sorted(saved - _figure_functions())  # the chapters' figures are styled
    assert _figure_functions() == set(EXAMPLES), sorted(_figure_functions() ^ set(EXAMPLES))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_figure_follows_the_style(name, small, tmp_path):
    _, fig = EXAMPLES[name](small, tmp_path)
    found = style.audit(fig)
    assert not found.problems(), found.problems()
    assert found.slide_scale == 1.0 or found.smallest_font_pt >= style.MIN_FONT_PT  # fits a slide, or big enough


def test_the_explorers_figures_follow_the_style(small):
    config, model, ids, cap, _ = small
    view = conv.conv_token_view(cap, 0, 3)
    for fig in (conv.plot_conv_token(view, 0, "t3"),
                generation._before_after(["a", "b", "c"], np.array([0.5, 0.3, 0.2]), np.array([0.9, 0.1, 0.0]))):
        assert not style.audit(fig).problems()


# ------------------------------------------------------------------------------- the palette
def test_the_palettes_are_told_apart_by_colour_blind_readers():
    for colours in (list(style.LAYER_COLOURS.values()), style.CATEGORICAL):
        for a in colours:
            for b in colours:
                assert a == b or style.confusable(a, b) is None, (a, b, style.confusable(a, b))
    hues = style.EXPERT_HUES  # too many to all differ; but no red beside a green a red-green reader confuses
    assert len(set(hues)) == len(hues)
    assert not [(a, b) for a in hues for b in hues if style.hue_family(a) == "red" and style.hue_family(b) == "green"
                and style.confusable(a, b) in ("protanopia", "deuteranopia")]


def test_colour_blind_check_finds_red_against_green():
    assert style.confusable("tab:red", "tab:green") == "deuteranopia"
    assert style.confusable(style.LAYER_COLOURS["conv"], style.LAYER_COLOURS["attention"]) is None
    assert style.hue_family("tab:red") == "red" and style.hue_family("tab:green") == "green"
    assert style.hue_family(style.MUTED) is None


def test_layer_types_are_drawn_in_the_palette_colours(small):
    config = small[0]
    data, fig = checkpoint.plot_layer_pattern({"tiny": config})
    drawn = [to_hex(p.get_facecolor()) for p in fig.axes[0].patches]
    expected = [to_hex(style.LAYER_COLOURS[kind]) for mixer, ffn in data["tiny"] for kind in (mixer, ffn)]
    assert drawn == expected
    block, fig = viz_model.plot_decoder_block(config)
    faces = {to_hex(p.get_facecolor()) for p in fig.axes[0].patches}
    assert {to_hex(style.LAYER_COLOURS[k]) for k in ("conv", "attention", "dense", "moe")} <= faces
    _, fig = checkpoint.plot_design_budget(LFM2Config())
    lines = {to_hex(line.get_color()) for line in fig.axes[1].lines}
    assert lines == {to_hex(style.LAYER_COLOURS["attention"]), to_hex(style.LAYER_COLOURS["conv"])}
    _, fig = attention.kv_cache_growth([attention.kv_cache_size(config)])
    assert {to_hex(line.get_color()) for line in fig.axes[0].lines} == {
        to_hex(style.LAYER_COLOURS["attention"]), to_hex(style.LAYER_COLOURS["conv"])}


# --------------------------------------------------------------------- expert identity
def test_token_routing_prints_every_first_choice(small):
    table = small[4]
    data, fig = viz_routing.plot_token_routing(table)
    printed = [t.get_text() for t in fig.axes[0].texts]
    expected = [str(data.first_choice[i][t]) for i in data.layers if data.first_choice[i] is not None
                for t in range(len(data.tokens))]
    assert printed == expected  # one id per MoE cell, row by row; dense rows empty
    html = viz_routing.routing_html(table)
    for t in range(len(table.tokens)):
        assert f"<sub>{table.experts[t][0][0]}</sub>" in html


def test_router_scores_label_every_chosen_cell(small):
    _, _, ids, cap, _ = small
    data, fig = moe.plot_router_scores([f"t{i}" for i in ids], cap["layers.2.moe.scores"][0],
                                       cap["layers.2.moe.selected"][0], cap["layers.2.moe.weights"][0])
    heat = next(ax for ax in fig.axes if ax.images)
    assert sorted(t.get_text() for t in heat.texts) == sorted(moe.weight_label(w) for w in data.weights.flatten())
    assert {to_hex(p.get_edgecolor()) for p in heat.patches} == {to_hex(style.INK)}  # outlines, not red boxes


def test_load_histograms_do_not_colour_by_expert_id(small):
    config = small[0]
    _, fig = viz_routing.plot_load_histograms({"run": (config.moe_layers, _layer_load(config))}, 2)
    bars = {to_hex(p.get_facecolor()) for ax in fig.axes for p in ax.patches}
    assert bars == {to_hex(style.LAYER_COLOURS["moe"])}


def test_entropy_uses_its_whole_scale(small):
    table = small[4]
    entropy = torch.full((len(table.layers), len(table.tokens)), 0.95)
    _, fig = viz_routing.plot_entropy_margin(table.tokens, table.layers, entropy, torch.zeros_like(entropy))
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)  # not stretched over 0.95 .. 0.95


# ------------------------------------------------------------------------------ the checker
def test_audit_finds_each_kind_of_fault():
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([0, 1], [0, 1], color="tab:red", label="a")
    ax.plot([0, 1], [1, 0], color="tab:green", label="b")
    ax.legend()
    ax.text(0.5, 0.5, "tiny", fontsize=7)
    ax.imshow(np.eye(3), cmap="jet")
    found = style.audit(fig)
    assert ("tiny", 7.0) in found.small_texts
    assert found.red_green and found.legend_by_hue_only == [("a", "b", "deuteranopia")]
    assert "jet" in found.colour_maps and len(found.problems()) >= 4
    big, _ = plt.subplots(figsize=(26.7, 15))  # about twice a slide: 12 pt text shrinks below 8 pt
    big.axes[0].set_title("title", fontsize=12)
    assert style.audit(big).slide_scale < 0.7 and ("title", pytest.approx(12 * style.audit(big).slide_scale)) in \
        style.audit(big).small_texts


# ------------------------------------------------------------------ one source for colours
COLOUR_LITERAL = re.compile(r"""["'](tab:\w+|#[0-9a-fA-F]{3,8}|black|white|grey|gray|dimgrey|red|green|blue|orange|"""
                            r"""purple|[0-9]?\.[0-9]+)["']|cmap\s*=\s*["']|get_cmap\(\s*["']|rgba?\(\d""")


@pytest.mark.parametrize("path", sorted(p for p in VIZ.glob("*.py") if p.name != "style.py"), ids=lambda p: p.name)
def test_colours_come_from_the_style_module(path):
    source = path.read_text(encoding="utf-8")
    found = [m.group(0) for m in COLOUR_LITERAL.finditer(source)]
    assert not found, f"{path.name} chooses colours itself: {found[:5]}; use lfm2_edu.viz.style"


def test_figure_functions_draw_under_the_style():
    for f in figures.all_figures():
        assert _is_styled(f.function()), f"{f.drawn_by} is not decorated with @style.figure"
