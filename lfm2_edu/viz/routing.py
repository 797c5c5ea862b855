"""Figures and the explorer of the routing chapters (09-11): which experts each token visits, how
balanced the load is, what the experts specialise in. The numbers come from lfm2_edu.routing;
each plot function returns (data it drew, figure).

    expert_colours(E)                                  one colour per expert (style.expert_colours)
    plot_token_routing(table)                          layer x token grid of first-choice experts, ids printed
    plot_token_scores(view, token, layer)              one token: all scores, selection scores, the chosen k
    plot_entropy_margin(tokens, layers, ent, margin)   how sure the router was, per layer and token
    plot_bias_ablation(tokens, ablation)               tokens re-routed, output change, with expert_bias zeroed
    route_explorer(model, tokenizer, text)             type a text, pick a layer and a token (ipywidgets)
    plot_balance_over_training(runs, ...)              MaxVio per layer over training steps, one panel per run
    plot_load_histograms(runs, k)                      tokens per expert in each MoE layer, one row per run
    plot_bias_heatmap(layers, bias)                    expert_bias per layer and expert
    plot_layer_expert_load(layers, load, k)            load per layer and expert against uniform
    plot_domain_specialisation(spec, k)                share of a domain's tokens per expert, per layer
    plot_vocabulary_specialisation(tokens, share, counts, layer, k)
    plot_coactivation(matrices, k)                     N(i and j) / N(i), per layer
    plot_consecutive_share(rates, baseline)            neighbours sharing an expert, against random
    plot_model_comparison(layers, values, baselines)   a few metrics per layer, for several models
    plot_token_margins(tokens, layers, margin, override)  how close each routing was, what the bias overrode
    plot_rerouting_control(control)                    zeroing the bias against random re-routing (09)
    plot_balancing_toy(sim), balancing_toy()           the bias update on a simulated router (10)
    expert_html(profile, tokenizer), expert_browser(analysis, tokenizer)   one expert's tokens (11)
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm, to_hex
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .. import routing
from . import style
from .moe import weight_label
from .style import expert_colours

DENSE_COLOUR = style.LAYER_COLOURS["dense"]  # dense layers: no router


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


# --------------------------------------------------------------------- chapter 09: token by token
@dataclass
class TokenRouting:
    """What `plot_token_routing` drew: tokens, every layer, and each MoE layer's first choices."""

    tokens: list[str]
    layers: list[int]  # every layer, dense ones included
    first_choice: dict[int, list[int] | None]  # layer -> first-choice expert per token; None: dense
    num_experts: int


@style.figure
def plot_token_routing(table: routing.RouteTable, title: str | None = None,
                       max_tokens: int = 48) -> tuple[TokenRouting, plt.Figure]:
    """A layer x token grid (top: the first layer), each cell the token's first-choice expert:
    its id printed in the cell, on that expert's colour, so runs of one expert stand out and no
    expert rests on its hue. Dense layers are grey and empty (no router). Mixtral's figure 8,
    for every layer of the model; a text longer than `max_tokens` wraps into blocks."""
    layers = sorted(table.layers + table.dense_layers)
    first = {i: None for i in table.dense_layers}
    for j, i in enumerate(table.layers):
        first[i] = [row[j][0] for row in table.experts]
    data = TokenRouting(list(table.tokens), layers, first, table.num_experts)
    colours = expert_colours(table.num_experts)
    T, L = len(data.tokens), len(layers)
    per_block = max(1, min(max_tokens, T))
    blocks = [range(b, min(T, b + per_block)) for b in range(0, T, per_block)] or [range(0)]
    col = min(0.3, (style.SLIDE_INCHES[0] - 1.8) / per_block)  # inches per token
    label_h = 0.3 + style.CHAR_INCHES * max(map(len, data.tokens), default=1)  # the rotated tokens below
    block_h = 0.3 * L + label_h
    fig, axes = plt.subplots(len(blocks), 1, figsize=(col * per_block + 1.8, block_h * len(blocks) + 0.9),
                             squeeze=False)
    for ax, block in zip(axes[:, 0], blocks):
        for row, i in enumerate(layers):
            for x, t in enumerate(block):
                if first[i] is None:
                    ax.add_patch(Rectangle((x, row), 1, 1, facecolor=DENSE_COLOUR, edgecolor=style.PAPER, lw=0.8))
                    continue
                e = first[i][t]
                ax.add_patch(Rectangle((x, row), 1, 1, facecolor=colours[e], edgecolor=style.PAPER, lw=0.8))
                ax.text(x + 0.5, row + 0.5, str(e), ha="center", va="center", color=style.text_colour(colours[e]))
        ax.set_xlim(0, per_block)
        ax.set_ylim(L, 0)
        ax.set_yticks([r + 0.5 for r in range(L)], [f"L{i} " + ("dense" if first[i] is None else "MoE") for i in layers])
        ax.set_xticks([x + 0.5 for x in range(len(block))], [data.tokens[t] for t in block], rotation=90,
                      family=style.MONO)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
    axes[0, 0].set_title(title or f"First-choice expert of each token, per layer ({table.num_experts} experts; "
                                  f"dense layers grey: no router)")
    fig.tight_layout()
    return data, fig


@dataclass
class TokenScores:
    """What `plot_token_scores` drew: one token at one MoE layer."""

    token: str
    layer: int
    scores: np.ndarray  # (E,) sigmoid scores
    selection_scores: np.ndarray  # (E,) scores + expert_bias
    selected: np.ndarray  # (k,) chosen experts, best first
    weights: np.ndarray  # (k,) their mixing weights
    margin: float  # k-th minus (k+1)-th selection score
    override: float  # unbiased score the bias traded away here (routing.bias_override); 0: it changed nothing


def token_scores(view: dict, t: int, token: str, layer: int) -> TokenScores:
    """Token t of a `RouteTable.layer(i)` view, with its margin and bias override."""
    k = view["selected"].shape[-1]
    return TokenScores(token, layer, _numpy(view["scores"][t]), _numpy(view["selection_scores"][t]),
                       _numpy(view["selected"][t]).astype(int), _numpy(view["weights"][t]),
                       float(routing.selection_margin(view["selection_scores"][t], k)),
                       float(routing.bias_override(view["scores"][t], view["selected"][t])))


@style.figure
def plot_token_scores(view: dict, t: int, token: str, layer: int, dpi: int = 90) -> tuple[TokenScores, plt.Figure]:
    """Bars: every expert's sigmoid score, the chosen k dark and labelled with their mixing
    weight; dots: its selection score (score + expert_bias); the dashed line: the k-th selection
    score."""
    data = token_scores(view, t, token, layer)
    E, k = len(data.scores), len(data.selected)
    chosen = np.zeros(E, dtype=bool)
    chosen[data.selected] = True
    col = min(0.45, 8.5 / E)
    fig, ax = plt.subplots(figsize=(col * E + 5.6, 4.0), dpi=dpi)
    ax.bar(np.arange(E), data.scores, color=np.where(chosen, style.HIGHLIGHT, DENSE_COLOUR))
    ax.scatter(np.arange(E), data.selection_scores, color=style.INK, s=18, zorder=3)
    threshold = np.sort(data.selection_scores)[::-1][k - 1]
    ax.axhline(threshold, color=style.INK, ls="--", lw=1)
    for e, w in zip(data.selected, data.weights):
        ax.annotate(weight_label(w), (e, max(data.scores[e], data.selection_scores[e])), xytext=(0, 4),
                    textcoords="offset points", ha="center")
    step = style.every(E, int(col * E / 0.28))
    ax.set_xticks(np.arange(0, E, step), [str(e) for e in range(0, E, step)])
    ax.set_xlabel("expert")
    ax.set_ylabel("score")
    ax.set_ylim(min(0.0, float(data.selection_scores.min())), 1.15 * max(float(data.scores.max()),
                                                                         float(data.selection_scores.max())))
    ax.set_title(f"Layer {layer}, token {token!r}:\nmargin {data.margin:.4f}, bias override {data.override:.4f}")
    handles = [Patch(color=DENSE_COLOUR, label="score s, not chosen"),
               Patch(color=style.HIGHLIGHT, label="score s, chosen\n(label: mixing weight)"),
               Line2D([], [], color=style.INK, marker="o", ls="", label="selection score\ns + bias (chooses)"),
               Line2D([], [], color=style.INK, ls="--", label=f"k-th selection score\n(k = {k})")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return data, fig


def _token_axis(T: int) -> tuple[float, list[int]]:
    """Inches per token and the tokens labelled, for a token axis that fits a slide at 12 pt."""
    col = min(0.3, (style.SLIDE_INCHES[0] - 3.0) / max(1, T))
    return col, list(range(0, T, style.every(T, int(col * T / 0.2))))


@style.figure
def plot_entropy_margin(tokens: list[str], layers: list[int], entropy, margin) -> tuple[dict, plt.Figure]:
    """Two heatmaps, MoE layer x token: normalised router entropy on its whole scale, 0 (one
    expert scored) to 1 (all alike), and the k-th minus (k+1)-th selection score from 0 (dark:
    a near tie for the last expert seat)."""
    data = {"tokens": list(tokens), "layers": list(layers), "entropy": _numpy(entropy), "margin": _numpy(margin)}
    T, L = len(tokens), len(layers)
    if data["entropy"].shape != (L, T) or data["margin"].shape != (L, T):
        raise ValueError(f"plot_entropy_margin: expected (layers, tokens) = {(L, T)} arrays, found "
                         f"{data['entropy'].shape} and {data['margin'].shape}")
    col, ticks = _token_axis(T)
    label_h = style.CHAR_INCHES * max(map(len, tokens), default=1)  # the rotated tokens below
    fig, axes = plt.subplots(2, 1, figsize=(col * T + 3.0, 1.9 + 2 * 0.27 * max(2, L) + label_h), sharex=True)
    limits = {"entropy": (0.0, 1.0), "margin": (0.0, max(1e-6, float(data["margin"].max()) if data["margin"].size else 1.0))}
    for ax, key in ((axes[0], "entropy"), (axes[1], "margin")):
        im = ax.imshow(data[key], aspect="auto", cmap=style.SEQUENTIAL, vmin=limits[key][0], vmax=limits[key][1],
                       interpolation="nearest")
        ax.set_yticks(range(L), [f"L{i}" for i in layers])
        ax.set_ylabel("MoE layer")
        fig.colorbar(im, ax=ax, label=key, fraction=0.025, pad=0.01)
    axes[1].set_xticks(ticks, [tokens[t] for t in ticks], rotation=90, family=style.MONO)
    low, high = (float(data["entropy"].min()), float(data["entropy"].max())) if data["entropy"].size else (0, 0)
    axes[0].set_title(f"Router entropy (1: all experts scored alike); here {low:.2f} to {high:.2f}")
    axes[1].set_title("Margin: k-th minus (k+1)-th selection score (dark: a near tie)")
    return data, fig


@style.figure
def plot_bias_ablation(tokens: list[str], ablation: dict) -> tuple[dict, plt.Figure]:
    """Top: which tokens change experts in each MoE layer when expert_bias is zeroed (in
    ablation["zeroed"]), dark cells, with each layer's share printed; bottom: how much each
    token's next-token distribution moves (KL), the tokens whose most likely next token changed
    drawn dark and hatched."""
    layers = sorted(ablation["rerouted"])
    rerouted = np.array([_numpy(ablation["rerouted"][i]) for i in layers]).reshape(len(layers), len(tokens))
    data = {"tokens": list(tokens), "layers": layers, "rerouted": rerouted.astype(bool),
            "kl": _numpy(ablation["kl"]), "top1_changed": _numpy(ablation["top1_changed"]).astype(bool)}
    T = len(tokens)
    col, ticks = _token_axis(T)
    fig, axes = plt.subplots(2, 1, figsize=(col * T + 3.0, 3.6 + 0.3 * len(layers) + style.CHAR_INCHES * max(
                             map(len, tokens), default=1)), sharex=True,
                             gridspec_kw={"height_ratios": [max(1, len(layers)), 4]})
    axes[0].imshow(rerouted, aspect="auto", cmap=style.LIGHT_SEQUENTIAL, vmin=0, vmax=1.25, interpolation="nearest")
    axes[0].set_yticks(range(len(layers)), [f"L{i}" for i in layers])
    axes[0].set_ylabel("MoE layer")
    share = rerouted.mean(1) if T else np.zeros(len(layers))
    for r, s in enumerate(share):
        axes[0].text(T - 0.4, r, f" {s:.0%}", va="center")
    axes[0].set_title("expert_bias zeroed: tokens whose experts change (dark), share per layer at right")
    changed = data["top1_changed"]
    axes[1].bar(range(T), data["kl"], color=np.where(changed, style.HIGHLIGHT, DENSE_COLOUR),
                hatch=None, edgecolor=np.where(changed, style.INK, DENSE_COLOUR))
    for t in np.flatnonzero(changed):
        axes[1].text(t, data["kl"][t], "▲", ha="center", va="bottom")
    axes[1].set_ylabel("KL, nats")
    axes[1].set_title("change of the next-token distribution (▲: the most likely next token changed)")
    axes[1].set_xticks(ticks, [tokens[t] for t in ticks], rotation=90, family=style.MONO)
    return data, fig


# --------------------------------------------------------------------------------- the explorer
def routing_html(table: routing.RouteTable, layer: int | None = None, token: int | None = None) -> str:
    """The text once per layer as HTML, each token on its first-choice expert's colour with the
    expert's id after it (dense layers grey); the picked layer's row in bold, the picked token
    outlined. Hovering a token lists all its experts. Tokens escaped."""
    colours = expert_colours(table.num_experts)
    rows = []
    for i in sorted(table.layers + table.dense_layers):
        dense = i in table.dense_layers
        spans = []
        for t, tok in enumerate(table.tokens):
            if dense:
                bg, ink, tip, expert = DENSE_COLOUR, style.INK, "dense layer: no router", ""
            else:
                experts = table.experts[t][table.layers.index(i)]
                bg, ink = to_hex(colours[experts[0]]), style.text_colour(colours[experts[0]])
                tip, expert = "experts " + ", ".join(map(str, experts)), f"<sub>{experts[0]}</sub>"
            outline = f"outline:2px solid {style.INK};" if t == token else ""
            spans.append(f'<span title="{html.escape(tip, quote=True)}" style="background:{bg};color:{ink};'
                         f'padding:0 2px;margin:1px;border-radius:2px;font-family:monospace;white-space:pre;'
                         f'{outline}">{html.escape(tok)}{expert}</span>')
        label = f"layer {i} {'dense' if dense else 'MoE'}"
        weight = "font-weight:bold;" if i == layer else ""
        rows.append(f'<div style="line-height:2;{weight}"><span style="display:inline-block;width:7.5em;'
                    f'color:{style.MUTED if dense else style.INK}">{label}</span>{"".join(spans)}</div>')
    return "".join(rows)


def route_explorer(model, tokenizer, text: str, layer: int | None = None, token: int | None = None):
    """A widget: type a text, pick a layer and a token. Shows the text coloured by first-choice
    expert (its id printed after each token) in every layer, the token's scores and selection scores at the picked layer, its
    margin and bias override, and what zeroing that layer's expert_bias changes. Built on
    lfm2_edu.routing.route_tokens (the data `lfm2-edu route` prints)."""
    import ipywidgets as widgets
    from IPython.display import display

    cfg = model.config
    moe = routing.moe_layers(cfg)
    if not moe:
        return widgets.HTML(f"<b>{html.escape(cfg.model_type)}</b>: no MoE layer in this model, so no router to explore.")
    box = widgets.Textarea(value=text, continuous_update=False, description="text",
                           layout=widgets.Layout(width="95%", height="4.5em"))
    layer_pick = widgets.Dropdown(options=[(f"layer {i} ({'MoE' if cfg.is_moe_layer(i) else 'dense'})", i)
                                           for i in range(cfg.num_hidden_layers)],
                                  value=moe[0] if layer is None else layer, description="layer")
    token_pick = widgets.Dropdown(description="token")
    coloured, stats, out = widgets.HTML(), widgets.HTML(), widgets.Output()
    state: dict = {}

    def route(_=None) -> None:
        ids = tokenizer.encode(box.value)
        if not ids:
            for key in ("ids", "table", "ablations"):
                state.pop(key, None)
            coloured.value, stats.value = "<i>Type some text.</i>", ""
            return
        first = "typed" not in state
        state.update(ids=ids, table=routing.route_tokens(model, tokenizer, ids), ablations={}, typed=True)
        tokens = state["table"].tokens
        state["busy"] = True  # no drawing while the token list changes
        try:
            token_pick.options = [(f"{t}: {tok}", t) for t, tok in enumerate(tokens)]
            token_pick.value = min(token, len(tokens) - 1) if first and token is not None else len(tokens) - 1
        finally:
            state["busy"] = False
        draw()

    def draw(_=None) -> None:
        if state.get("busy") or "table" not in state or token_pick.value is None:
            return
        table, i, t = state["table"], layer_pick.value, token_pick.value
        coloured.value = routing_html(table, i, t)
        with out:
            out.clear_output(wait=True)
            if i in table.dense_layers:
                stats.value = (f"<b>layer {i} is dense</b>: every token goes through the same SwiGLU MLP; "
                               f"there is no router and nothing to choose.")
                return
            view = table.layer(i)
            data, fig = plot_token_scores(view, t, table.tokens[t], i, dpi=72)
            display(fig)
            plt.close(fig)
        if i not in state["ablations"]:
            state["ablations"][i] = routing.bias_ablation(model, state["ids"], [i])
        ab = state["ablations"][i]
        experts = ", ".join(f"{e} (w={w:.2f})" for e, w in zip(data.selected, data.weights))
        lines = [f"<b>{html.escape(repr(table.tokens[t]))}</b> at layer {i}: experts {experts}; "
                 f"margin {data.margin:.4f}; bias override {data.override:.4f}"]
        if not ab["has_bias"]:
            lines.append("This model has no expert_bias (use_expert_bias is False): nothing to zero.")
        else:
            moved = [table.tokens[s] for s in np.flatnonzero(ab["rerouted"][i].numpy())]
            shown = ", ".join(html.escape(repr(s)) for s in moved[:12]) + (" ..." if len(moved) > 12 else "")
            lines.append(f"Zeroing layer {i}'s expert_bias re-routes {len(moved)} of {len(table.tokens)} tokens "
                         f"there{': ' + shown if moved else ''}. This token: "
                         f"{'re-routed' if ab['rerouted'][i][t] else 'same experts'}, next-token KL "
                         f"{float(ab['kl'][t]):.4f} nats (text mean {float(ab['kl'].mean()):.4f}), most likely "
                         f"next token {'changed' if ab['top1_changed'][t] else 'unchanged'}.")
        stats.value = "<br>".join(lines)

    box.observe(route, names="value")
    layer_pick.observe(draw, names="value")
    token_pick.observe(draw, names="value")
    route()
    widget = widgets.VBox([box, widgets.HBox([layer_pick, token_pick]), coloured, out, stats])
    widget.state = state  # what it shows, for inspection
    return widget


# ----------------------------------------------------------------- chapter 10: load balancing
@style.figure
def plot_balance_over_training(runs: dict[str, dict], num_experts: int, k: int,
                               title: str = "Load balance over training") -> tuple[dict, plt.Figure]:
    """One panel per run: MaxVio of every MoE layer at each logged step (thin lines, each named at
    its end) and their mean (thick); the dashed line is the worst a top-k router can do, E/k - 1;
    the dotted one, where the run has it, what a uniformly random router shows on one logged
    batch (its 95th percentile: below it, the imbalance is sampling noise).

    runs: name -> routing.log_balance(log)."""
    ceiling = num_experts / k - 1
    data = {"runs": runs, "ceiling": ceiling, "noise_floor": {name: bal.get("noise_floor") for name, bal in runs.items()}}
    fig, axes = plt.subplots(1, len(runs), figsize=(min(13.2, 5.6 * len(runs) + 1.0), 4.6), sharey=True, squeeze=False)
    for ax, (name, bal) in zip(axes[0], runs.items()):
        layers = sorted(bal["max_violation"])
        for i in layers:
            ax.plot(bal["steps"], bal["max_violation"][i], lw=1.0, alpha=0.8, color=style.LAYER_COLOURS["moe"])
            ax.annotate(f"L{i}", (bal["steps"][-1], bal["max_violation"][i][-1]), xytext=(3, 0),
                        textcoords="offset points", va="center", color=style.MUTED)
        if layers:
            mean = np.mean([bal["max_violation"][i] for i in layers], axis=0)
            ax.plot(bal["steps"], mean, lw=3, color=style.INK)
        ax.axhline(ceiling, color=style.INK, ls="--", lw=1)
        if bal.get("noise_floor"):  # what a uniformly random router shows on one logged batch
            p95 = bal["noise_floor"]["p95"]
            ax.axhline(p95, color=style.MUTED, ls=":", lw=1.5)
            ax.annotate(f"noise floor {p95:.2f}", (0, p95), xycoords=("axes fraction", "data"), xytext=(4, 3),
                        textcoords="offset points", va="bottom", color=style.MUTED)
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MaxVio (0 = perfect balance)")
    handles = [Line2D([], [], color=style.LAYER_COLOURS["moe"], lw=1, label="one MoE layer (Li at its end)"),
               Line2D([], [], color=style.INK, lw=3, label="mean of the layers"),
               Line2D([], [], color=style.INK, ls="--", lw=1, label=f"worst possible, E/k-1 = {ceiling:g}")]
    if any(data["noise_floor"].values()):
        handles.append(Line2D([], [], color=style.MUTED, ls=":", lw=1.5, label="noise floor of one batch (p95)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return data, fig


@style.figure
def plot_load_histograms(runs: dict[str, tuple[list[int], torch.Tensor]], k: int,
                         title: str = "Tokens per expert", max_columns: int = 6) -> tuple[dict, plt.Figure]:
    """A grid of bar charts, a row per run (and MoE layers wrapping after `max_columns`): each
    expert's share of the routed slots, in expert order; the dashed line is the uniform share 1/E.
    One colour: an expert's number is its position. runs: name -> (layers, (L, E) load)."""
    data = {name: (list(layers), _numpy(load)) for name, (layers, load) in runs.items()}
    floors = {name: [routing.load_noise_floor(torch.tensor(row), k) for row in load] for name, (_, load) in data.items()}
    n_layers = max(len(layers) for layers, _ in data.values())
    cols = min(max_columns, n_layers)
    wraps = -(-n_layers // cols)
    fig, axes = plt.subplots(len(data) * wraps, cols, figsize=(1.95 * cols + 1.4, 2.3 * len(data) * wraps + 1.0),
                             sharey=True, squeeze=False)
    for r, (name, (layers, load)) in enumerate(data.items()):
        for c in range(cols * wraps):
            ax = axes[r * wraps + c // cols][c % cols]
            if c >= len(layers):
                ax.axis("off")
                continue
            share = load[c] / load[c].sum()
            E = len(share)
            ax.bar(np.arange(E), share, color=style.LAYER_COLOURS["moe"], width=0.85)
            ax.axhline(1 / E, color=style.REFERENCE, ls="--", lw=1)
            mv = routing.format_max_violation(routing.max_violation(torch.tensor(load[c])), floors[name][c])
            ax.set_title(f"L{layers[c]}: MaxVio {mv}")
            ax.set_xticks([0, E - 1])
            if c % cols == 0:
                ax.set_ylabel(f"{name}\nshare of slots")
        for ax in axes[r * wraps + wraps - 1]:
            ax.set_xlabel("expert")
    fig.suptitle(f"{title} (dashed: uniform 1/E)")
    fig.tight_layout()
    return {"runs": data, "noise_floor": floors}, fig


@style.figure
def plot_bias_heatmap(layers: list[int], bias, title: str = "expert_bias at the end of training") -> tuple[dict, plt.Figure]:
    """MoE layer x expert heatmap of the bias, centred at 0 (red: raised, the expert was
    underloaded; blue: lowered, it was overloaded)."""
    data = {"layers": list(layers), "bias": _numpy(bias)}
    L, E = data["bias"].shape
    fig, ax = plt.subplots(figsize=_layer_expert_size(L, E))
    lim = max(1e-6, float(np.abs(data["bias"]).max()))
    im = ax.imshow(data["bias"], cmap=style.DIVERGING, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    _label_layer_expert_axes(ax, layers, E, title)
    fig.colorbar(im, ax=ax, label="bias added to the score (selection only)")
    return data, fig


def _layer_expert_size(L: int, E: int) -> tuple[float, float]:
    """Figure size of a MoE layer x expert heatmap with its colour bar."""
    return min(13.0, 3.4 + 0.42 * E), 1.9 + 0.42 * L


def _label_layer_expert_axes(ax, layers: list[int], E: int, title: str) -> None:
    """Rows: MoE layers; columns: experts, numbered (every one when they fit at 12 pt)."""
    ax.set_yticks(range(len(layers)), [f"layer {i}" for i in layers])
    step = style.every(E, 32)
    ax.set_xticks(range(0, E, step), [str(e) for e in range(0, E, step)])
    ax.set_xlabel("expert")
    ax.set_title(title)


# --------------------------------------------------------------- chapter 11: what experts learn
@style.figure
def plot_layer_expert_load(layers: list[int], load, k: int,
                           title: str = "Load per layer and expert") -> tuple[dict, plt.Figure]:
    """MoE layer x expert heatmap of load / uniform load (1: each expert gets a share k/E of the
    tokens); diverging around 1."""
    load = _numpy(load)
    ratio = load / load.mean(axis=1, keepdims=True)  # mean load per expert = N k / E
    data = {"layers": list(layers), "load": load, "ratio": ratio}
    L, E = load.shape
    fig, ax = plt.subplots(figsize=_layer_expert_size(L, E))
    top = max(2.0, float(ratio.max()))
    im = ax.imshow(ratio, cmap=style.DIVERGING, norm=TwoSlopeNorm(1.0, 0.0, top), aspect="auto", interpolation="nearest")
    _label_layer_expert_axes(ax, layers, E, title)
    fig.colorbar(im, ax=ax, label="load / uniform load")
    return data, fig


@style.figure
def plot_domain_specialisation(spec: dict[int, dict[str, torch.Tensor]], k: int,
                               title: str = "Domain specialisation N(expert, domain) / N(domain)") -> tuple[dict, plt.Figure]:
    """One heatmap per MoE layer, domain x expert, coloured around the uniform share k/E (white):
    OLMoE's figure of domain specialisation. spec: layer -> domain -> (E,) share."""
    layers = sorted(spec)
    domains = list(spec[layers[0]]) if layers else []
    data = {"layers": layers, "domains": domains,
            "share": np.array([[_numpy(spec[i][d]) for d in domains] for i in layers])}  # (L, D, E)
    E = data["share"].shape[-1] if layers else 1
    cols = min(3, max(1, len(layers)))
    rows = math.ceil(len(layers) / cols) if layers else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 2.4, (0.3 * len(domains) + 1.3) * rows + 0.8),
                             squeeze=False, layout="constrained")
    base = k / E
    top = max(2 * base, float(data["share"].max()) if layers else 1.0)
    norm = TwoSlopeNorm(base, 0.0, top)
    im = None
    for n, ax in enumerate(axes.flat):
        if n >= len(layers):
            ax.axis("off")
            continue
        im = ax.imshow(data["share"][n], cmap=style.DIVERGING, norm=norm, aspect="auto", interpolation="nearest")
        ax.set_title(f"layer {layers[n]}")
        ax.set_yticks(range(len(domains)), domains if n % cols == 0 else [])
        step = style.every(E, 8)
        ax.set_xticks(range(0, E, step), [str(e) for e in range(0, E, step)])
        ax.set_xlabel("expert")
    if im is not None:
        fig.colorbar(im, ax=axes, label=f"share of the domain's tokens\n(white: k/E = {base:.3f})", shrink=0.9)
    fig.suptitle(title)
    return data, fig


@style.figure
def plot_vocabulary_specialisation(tokens: list[str], share, counts, layer: int, k: int) -> tuple[dict, plt.Figure]:
    """Token x expert heatmap of N(token routed to expert) / N(token) at one layer, for a few
    frequent tokens (rows labelled with their count), coloured around the uniform k/E."""
    data = {"tokens": list(tokens), "share": _numpy(share), "counts": _numpy(counts).astype(int), "layer": layer}
    n, E = data["share"].shape
    labels = [f"{t!r} ×{c}" for t, c in zip(data["tokens"], data["counts"])]
    row = min(0.3, (style.SLIDE_INCHES[1] - 1.9) / max(1, n))
    fig, ax = plt.subplots(figsize=(min(13.0, 3.6 + style.CHAR_INCHES * max(map(len, labels), default=1) + 0.4 * E),
                                    1.9 + row * n))
    base = k / E
    im = ax.imshow(data["share"], cmap=style.DIVERGING, norm=TwoSlopeNorm(base, 0.0, max(1.0, 2 * base)), aspect="auto",
                   interpolation="nearest")
    ax.set_yticks(range(n), labels, family=style.MONO)
    step = style.every(E, 32)
    ax.set_xticks(range(0, E, step), [str(e) for e in range(0, E, step)])
    ax.set_xlabel("expert")
    ax.set_title(f"Layer {layer}: where each token goes, N(token → expert) / N(token)")
    fig.colorbar(im, ax=ax, label=f"share of the token's occurrences\n(white: k/E = {base:.3f})")
    return data, fig


@style.figure
def plot_coactivation(matrices: dict[int, torch.Tensor], k: int,
                      title: str = "Co-activation N(i and j) / N(i)") -> tuple[dict, plt.Figure]:
    """One E x E heatmap per MoE layer (row i: how often expert j joins expert i); independent
    uniform routing would give (k-1)/(E-1) everywhere off the diagonal."""
    layers = sorted(matrices)
    data = {"layers": layers, "coactivation": np.array([_numpy(matrices[i]) for i in layers])}
    E = data["coactivation"].shape[-1] if layers else 1
    cols = min(3, max(1, len(layers)))
    rows = math.ceil(len(layers) / cols) if layers else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 2.2, min(7.3, 3.1 * rows + 0.7)), squeeze=False,
                             layout="constrained")
    vmax = max(1e-6, float(data["coactivation"].max()) if layers else 1.0)
    im = None
    for n, ax in enumerate(axes.flat):
        if n >= len(layers):
            ax.axis("off")
            continue
        im = ax.imshow(data["coactivation"][n], cmap=style.SEQUENTIAL, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"layer {layers[n]}")
        ticks = list(range(0, E, style.every(E, 4)))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        if n // cols == rows - 1 or n + cols >= len(layers):
            ax.set_xlabel("expert j")
        if n % cols == 0:
            ax.set_ylabel("expert i")
    if im is not None:
        base = (k - 1) / max(1, E - 1)
        fig.colorbar(im, ax=axes, label=f"N(i and j) / N(i)\n(uniform: {base:.3f})", shrink=0.9)
    fig.suptitle(title)
    return data, fig


@style.figure
def plot_consecutive_share(rates: dict[int, dict[str, float]], baseline: dict[str, float],
                           title: str = "Do neighbouring tokens share an expert?") -> tuple[dict, plt.Figure]:
    """Per MoE layer: the share of neighbouring token pairs with the same first-choice expert, and
    with any expert in common; dashed: the same for independent uniform routing (Mixtral, sec. 5)."""
    layers = sorted(rates)
    data = {"layers": layers, "first": [rates[i]["first"] for i in layers],
            "any": [rates[i]["any"] for i in layers], "baseline": dict(baseline)}
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(layers) + 3.2) + 3.6, 4.2))
    first, common = style.CATEGORICAL[0], style.CATEGORICAL[1]
    ax.bar(x - 0.2, data["first"], width=0.4, color=first, label="same first choice (left)")
    ax.bar(x + 0.2, data["any"], width=0.4, color=common, hatch="//", edgecolor=style.PAPER,
           label="any expert in common (right)")
    ax.axhline(baseline["first"], color=first, ls="--", lw=1.5, label=f"random, first: {baseline['first']:.3f}")
    ax.axhline(baseline["any"], color=common, ls=":", lw=2, label=f"random, any: {baseline['any']:.3f}")
    ax.set_xticks(x, [f"L{i}" for i in layers])
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("share of neighbouring pairs")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return data, fig


@style.figure
def plot_model_comparison(layers: list[int], values: dict[str, dict[str, list[float]]],
                          baselines: dict[str, float | None] | None = None,
                          title: str = "Trained against untrained routers") -> tuple[dict, plt.Figure]:
    """One panel per metric, one group of bars per MoE layer, one bar per model.
    values: model name -> metric name -> one value per layer; baselines: metric -> dashed line."""
    models = list(values)
    metrics = list(values[models[0]]) if models else []
    baselines = baselines or {}
    data = {"layers": list(layers), "values": values, "baselines": dict(baselines)}
    cols = min(2, max(1, len(metrics)))
    rows = -(-len(metrics) // cols) if metrics else 1
    fig, axes = plt.subplots(rows, cols, figsize=(min(13.0, 4.2 * cols + 1.0), 2.6 * rows + 1.2), squeeze=False)
    x = np.arange(len(layers))
    width = 0.8 / max(1, len(models))
    colours = [style.CATEGORICAL[0], style.LAYER_COLOURS["dense"], *style.CATEGORICAL[1:]]
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics):
        for n, name in enumerate(models):
            ax.bar(x + (n - (len(models) - 1) / 2) * width, values[name][metric], width=width,
                   color=colours[n % len(colours)], hatch="" if n < 2 else "//", label=name)
        if baselines.get(metric) is not None:
            ax.axhline(baselines[metric], color=style.REFERENCE, ls="--", lw=1, label="uniform random routing")
        ax.set_xticks(x, [f"L{i}" for i in layers])
        ax.set_title(metric)
    for ax in axes[-1]:
        ax.set_xlabel("MoE layer")
    if metrics:
        entries = {}
        for ax in axes.flat:  # every entry once, the baseline too (drawn in some panels only)
            for h, lab in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(lab, h)
        labels = sorted(entries, key=lambda lab: models.index(lab) if lab in models else len(models))  # models in order
        fig.legend([entries[lab] for lab in labels], labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return data, fig


__all__ = [
    "DENSE_COLOUR", "TokenRouting", "TokenScores", "expert_colours", "plot_balance_over_training", "plot_bias_ablation",
    "plot_bias_heatmap", "plot_coactivation", "plot_consecutive_share", "plot_domain_specialisation",
    "plot_entropy_margin", "plot_layer_expert_load", "plot_load_histograms", "plot_model_comparison", "plot_token_routing",
    "plot_token_scores", "plot_vocabulary_specialisation", "route_explorer", "routing_html", "token_scores",
]


# ------------------------------------------------------- controls and explorers (chapters 09-11)
@style.figure
def plot_token_margins(tokens: list[str], layers: list[int], margin, override) -> tuple[dict, plt.Figure]:
    """How close each routing was and what the bias overrode: two heatmaps, MoE layer x token, of
    the margin (k-th minus (k+1)-th selection score; dark: a near tie for the last seat) and the
    bias override (unbiased score the bias traded away; 0: the bias changed nothing). Unlike the
    router entropy, both vary from token to token; the data holds their spread (routing.quantiles)."""
    data = {"tokens": list(tokens), "layers": list(layers), "margin": _numpy(margin), "override": _numpy(override)}
    T, L = len(tokens), len(layers)
    if data["margin"].shape != (L, T) or data["override"].shape != (L, T):
        raise ValueError(f"plot_token_margins: expected (layers, tokens) = {(L, T)} arrays, found "
                         f"{data['margin'].shape} and {data['override'].shape}")
    data["spread"] = {key: routing.quantiles(torch.as_tensor(data[key])) for key in ("margin", "override")}
    col, ticks = _token_axis(T)
    label_h = style.CHAR_INCHES * max(map(len, tokens), default=1)  # the rotated tokens below
    fig, axes = plt.subplots(2, 1, figsize=(col * T + 3.0, 1.9 + 2 * 0.27 * max(2, L) + label_h), sharex=True)
    for ax, key, label in ((axes[0], "margin", "margin"), (axes[1], "override", "score overridden")):
        im = ax.imshow(data[key], aspect="auto", cmap=style.SEQUENTIAL, vmin=0.0, interpolation="nearest")
        ax.set_yticks(range(L), [f"L{i}" for i in layers])
        ax.set_ylabel("MoE layer")
        fig.colorbar(im, ax=ax, label=label, fraction=0.025, pad=0.01)
    axes[1].set_xticks(ticks, [tokens[t] for t in ticks], rotation=90, family=style.MONO)
    m, o = data["spread"]["margin"], data["spread"]["override"]
    axes[0].set_title(f"Margin, k-th minus (k+1)-th selection score (dark: a near tie); 10-90%: "
                      f"{m['p10']:.3f} to {m['p90']:.3f}")
    axes[1].set_title(f"Score the bias overrode (0: it changed nothing); 10-90%: {o['p10']:.3f} to {o['p90']:.3f}")
    return data, fig


RANDOM_HATCH = "//"  # random re-routing: hatched, so that it is not told from the bias by hue alone


@style.figure
def plot_rerouting_control(control: dict) -> tuple[dict, plt.Figure]:
    """Zeroing expert_bias against re-routing the same direct share of tokens at random
    (routing.rerouting_control): per layer the share of tokens re-routed, then the mean next-token
    KL and the share of positions whose most likely next token changes, one bar per random seed
    (hatched)."""
    layers = sorted(control["share"])
    bias, rand = control["bias_zeroed"], control["random"]
    data = {"layers": layers, "direct_share": [control["share"][i] for i in layers], "mode": control["mode"],
            "rerouted": {"bias zeroed": [bias["rerouted"][i] for i in layers],
                         "random": [float(np.mean([r["rerouted"][i] for r in rand])) if rand else float("nan")
                                    for i in layers]},
            "kl_mean": {"bias zeroed": bias["kl_mean"], "random": [r["kl_mean"] for r in rand]},
            "top1_changed": {"bias zeroed": bias["top1_changed"], "random": [r["top1_changed"] for r in rand]},
            "seeds": [r["seed"] for r in rand]}
    zeroed, random_ = style.CATEGORICAL[0], style.CATEGORICAL[1]
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.6), gridspec_kw={"width_ratios": [2, 1, 1]})
    x = np.arange(len(layers))
    ax = axes[0]
    ax.bar(x - 0.2, data["rerouted"]["bias zeroed"], width=0.4, color=zeroed, label="bias zeroed")
    ax.bar(x + 0.2, data["rerouted"]["random"], width=0.4, color=random_, hatch=RANDOM_HATCH, edgecolor=style.INK,
           label="random (mean of seeds)")
    ax.scatter(x, data["direct_share"], color=style.INK, marker="_", s=400, zorder=3, label="direct share (forced)")
    ax.set_xticks(x, [f"L{i}" for i in layers])
    ax.set_ylabel("share of tokens re-routed")
    ax.set_ylim(0, 1.35)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.set_title(f"Re-routed tokens per MoE layer ({control['tokens']} tokens)")
    names = ["bias\nzeroed"] + [f"seed\n{s}" for s in data["seeds"]]
    for ax, key, label in ((axes[1], "kl_mean", "mean KL, nats"), (axes[2], "top1_changed", "share of positions")):
        values = [data[key]["bias zeroed"], *data[key]["random"]]
        ax.bar(range(len(values)), values, color=[zeroed] + [random_] * len(rand),
               hatch=[""] + [RANDOM_HATCH] * len(rand), edgecolor=style.INK)
        for n, v in enumerate(values):
            ax.text(n, v, f"{v:.2g}", ha="center", va="bottom")
        ax.set_xticks(range(len(values)), names)
        ax.set_ylabel(label)
        ax.margins(y=0.15)  # room for the values above the bars
    axes[1].set_title("next-token change")
    axes[2].set_title("top next token changed")
    fig.suptitle(f"Zeroing expert_bias against random re-routing of the same share ({control['mode']})")
    fig.tight_layout()
    return data, fig


@style.figure
def plot_balancing_toy(sim: dict) -> tuple[dict, plt.Figure]:
    """The bias update on a simulated router (routing.simulate_balancing): MaxVio per step against
    the noise floor and the worst case E/k - 1; each expert's share of the slots at the last step
    (its number is its position); each expert's bias over the steps, numbered at its end."""
    load = _numpy(sim["load"])  # (steps, E)
    E = load.shape[1]
    data = {"steps": list(sim["steps"]), "max_violation": list(sim["max_violation"]), "noise_floor": sim["noise_floor"],
            "ceiling": sim["ceiling"], "final_share": load[-1] / load[-1].sum(), "bias": _numpy(sim["bias"])}
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.4))
    ax = axes[0]
    ax.plot(data["steps"], data["max_violation"], color=style.INK, lw=1.2, label="MaxVio")
    ax.axhline(data["ceiling"], color=style.REFERENCE, ls="--", lw=1, label=f"worst, E/k-1 = {data['ceiling']:g}")
    ax.axhline(data["noise_floor"]["p95"], color=style.MUTED, ls=":", lw=1.5,
               label=f"noise floor (p95) {data['noise_floor']['p95']:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("MaxVio")
    ax.legend(frameon=False)
    ax.set_title("balance per step")
    axes[1].bar(np.arange(E), data["final_share"], color=style.CATEGORICAL[0], width=0.85)  # not green: red hues beside
    axes[1].axhline(1 / E, color=style.REFERENCE, ls="--", lw=1, label="uniform 1/E")
    axes[1].set_xticks(range(0, E, style.every(E, 16)))
    axes[1].set_xlabel("expert")
    axes[1].set_ylabel("share of the slots")
    axes[1].legend(frameon=False)
    axes[1].set_title("load at the last step")
    colours = expert_colours(E)  # an aid to follow a line; the number at its end names the expert
    for e in range(E):
        axes[2].plot(data["steps"], data["bias"][:, e], color=colours[e], lw=1)
        axes[2].annotate(str(e), (data["steps"][-1], data["bias"][-1, e]), xytext=(3, 0), textcoords="offset points",
                         va="center", color=style.INK)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("expert_bias")
    axes[2].set_title("each expert's bias")
    st = sim["settings"]
    fig.suptitle(f"Simulated router: {E} experts, top-{st['k']}, {st['tokens']} tokens per step, skew {st['skew']:g}, "
                 f"u = {st['rate']:g}")
    fig.tight_layout()
    return data, fig


def balancing_toy(num_experts: int = 8, k: int = 2, tokens: int = 256, steps: int = 200, rate: float = 0.01,
                  skew: float = 1.5, seed: int = 0):
    """A widget: sliders for the update rate u, the steps, the router's skew and the tokens per
    step; it reruns routing.simulate_balancing and draws plot_balancing_toy. Try u = 0 (no
    balancing), a u too small for the steps, and one so large that the load jitters."""
    import ipywidgets as widgets
    from IPython.display import display

    rate_pick = widgets.FloatLogSlider(value=max(rate, 1e-4), base=10, min=-4, max=-0.5, step=0.1,
                                       description="rate u", continuous_update=False, readout_format=".4f")
    off = widgets.Checkbox(value=rate == 0, description="no update (u = 0)")
    steps_pick = widgets.IntSlider(value=steps, min=10, max=1000, step=10, description="steps", continuous_update=False)
    skew_pick = widgets.FloatSlider(value=skew, min=0.0, max=3.0, step=0.1, description="skew", continuous_update=False)
    tokens_pick = widgets.IntSlider(value=tokens, min=16, max=4096, step=16, description="tokens/step",
                                    continuous_update=False)
    out, stats = widgets.Output(), widgets.HTML()
    state: dict = {}

    def draw(_=None) -> None:
        u = 0.0 if off.value else rate_pick.value
        sim = routing.simulate_balancing(num_experts, k, tokens_pick.value, steps_pick.value, u, skew_pick.value, seed=seed)
        state["sim"] = sim
        with out:
            out.clear_output(wait=True)
            state["data"], fig = plot_balancing_toy(sim)
            display(fig)
            plt.close(fig)
        late = sim["max_violation"][-max(1, len(sim["steps"]) // 4):]
        stats.value = (f"u = {u:g}: MaxVio {routing.format_max_violation(sim['max_violation'][0], sim['noise_floor'])} "
                       f"at the first step, {routing.format_max_violation(sum(late) / len(late), sim['noise_floor'])} "
                       f"on average over the last quarter of the steps; the bias spans "
                       f"{float(sim['bias'][-1].min()):+.3f} to {float(sim['bias'][-1].max()):+.3f}.")

    for w in (rate_pick, off, steps_pick, skew_pick, tokens_pick):
        w.observe(draw, names="value")
    draw()
    widget = widgets.VBox([widgets.HBox([rate_pick, off, steps_pick]), widgets.HBox([skew_pick, tokens_pick]), out, stats])
    widget.state = state  # what it shows, for inspection
    return widget


CONTEXT_MARK = style.OKABE_ITO["yellow"]  # behind the token in an example context


def _bar(share: float, scale: float) -> str:
    width = max(0.0, min(1.0, share / scale)) * 10
    return (f'<span style="display:inline-block;background:{style.CATEGORICAL[0]};height:0.8em;'
            f'width:{width:.2f}em"></span>')


def expert_html(profile: dict, tokenizer, layer: int) -> str:
    """routing.expert_profile as HTML: its load, its domains, its top tokens and example contexts
    (the token in bold between its neighbours). Every token is escaped."""
    e, k_over_e = profile["expert"], profile["uniform"]

    def text(ids: list[int]) -> str:
        return html.escape("".join(tokenizer.tokens(ids, visible_whitespace=True)))

    rows = [f"<b>layer {layer}, expert {e}</b>: visited by {profile['visits']} of {profile['tokens']} tokens "
            f"({profile['load_share']:.3f}; uniform k/E = {k_over_e:.3f}), its first choice for "
            f"{profile['first_choice_share']:.0%} of them."]
    rows.append("<table><tr><th>domain</th><th>share of the domain's tokens</th><th>x k/E</th>"
                "<th>share of its visitors</th></tr>")
    for d, share in profile["domain_share"].items():
        rows.append(f"<tr><td>{html.escape(d)}</td><td>{_bar(share, 1.0)} {share:.3f}</td><td>{share / k_over_e:.1f}</td>"
                    f"<td>{profile['domain_mix'][d]:.0%}</td></tr>")
    rows.append("</table><b>tokens routed to it most consistently</b> (share of the token's occurrences, count): ")
    rows.append(", ".join(f"<code>{text([x])}</code> {share:.2f} ×{count}" for x, share, count in profile["top_tokens"])
                or "<i>no token seen often enough</i>")
    rows.append("<br><b>example contexts</b> (a random sample of its tokens):<div style='font-family:monospace;"
                "white-space:pre'>")
    for c in profile["contexts"]:
        rows.append(f"{html.escape(c['domain']):>10} │ {text(c['before'])}<b style='background:{CONTEXT_MARK}'>"
                    f"{text([c['token']])}</b>{text(c['after'])}   (experts {', '.join(map(str, c['experts']))})")
    rows.append("</div>")
    return "\n".join(rows)


def expert_browser(analysis: dict, tokenizer, layer: int | None = None, expert: int | None = None, **profile_options):
    """A widget over routing.held_out_analysis's result: pick a MoE layer and an expert; it shows
    expert_profile of that expert as expert_html (its domains, top tokens and example contexts)."""
    import ipywidgets as widgets

    layers = analysis["layers"]
    layer_pick = widgets.Dropdown(options=[(f"layer {i}", i) for i in layers], value=layers[0] if layer is None else layer,
                                  description="MoE layer")
    expert_pick = widgets.Dropdown(options=list(range(analysis["num_experts"])), value=expert or 0, description="expert")
    page = widgets.HTML()
    state: dict = {}

    def draw(_=None) -> None:
        i, e = layer_pick.value, expert_pick.value
        selected = {d: analysis["selected"][d][i] for d in analysis["domains"]}
        state["profile"] = routing.expert_profile(analysis["token_ids"], selected, e, analysis["num_experts"],
                                                  **profile_options)
        state["layer"] = i
        page.value = expert_html(state["profile"], tokenizer, i)

    layer_pick.observe(draw, names="value")
    expert_pick.observe(draw, names="value")
    draw()
    widget = widgets.VBox([widgets.HBox([layer_pick, expert_pick]), page])
    widget.state = state
    return widget


__all__ += ["balancing_toy", "expert_browser", "expert_html", "plot_balancing_toy", "plot_rerouting_control",
            "plot_token_margins"]
