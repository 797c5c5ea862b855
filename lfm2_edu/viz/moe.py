"""Figures for the MoE layer (chapter 06): what the router scores and chooses, token by token.

    data, fig = plot_router_scores(tokens, scores, selected, weights, expert_bias)
    widget = router_explorer(model, tokenizer, text)     # type a text, pick a MoE layer, see its heatmap
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from ..trace import Capture
from . import style


@dataclass
class RouterScores:
    """What `plot_router_scores` drew: T tokens routed over E experts."""

    tokens: list[str]
    scores: np.ndarray  # (T, E) sigmoid(router logits), the unbiased scores
    selected: np.ndarray  # (T, k) chosen experts, best first
    weights: np.ndarray  # (T, k) their mixing weights
    expert_bias: np.ndarray | None  # (E,) or None
    title: str

    @property
    def chosen_mask(self) -> np.ndarray:
        """(T, E) bool: True where a token chose an expert."""
        mask = np.zeros(self.scores.shape, dtype=bool)
        np.put_along_axis(mask, self.selected, True, axis=1)
        return mask


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def weight_label(w: float) -> str:
    """A mixing weight as printed in a chosen cell, without the leading zero (0.42 prints as .42),
    narrow enough for 32 experts."""
    text = f"{w:.2f}"
    return text[1:] if text.startswith("0.") else text


@style.figure
def plot_router_scores(tokens: list[str], scores, selected, weights, expert_bias=None,
                       title: str = "Router scores") -> tuple[RouterScores, plt.Figure]:
    """Heatmap tokens x experts of the sigmoid scores (white 0, dark blue 1); each token's k chosen
    experts are outlined in black and labelled with their mixing weight, so the choice reads
    without colour. With an expert_bias (E,), a strip above shows it.

    scores (T, E), selected (T, k), weights (T, k): tensors or arrays of one sequence.
    """
    data = RouterScores(list(tokens), _numpy(scores), _numpy(selected).astype(int), _numpy(weights),
                        None if expert_bias is None else _numpy(expert_bias), title)
    T, E = data.scores.shape
    if len(data.tokens) != T or data.selected.shape[0] != T or data.weights.shape != data.selected.shape:
        raise ValueError(f"plot_router_scores: expected {T} tokens, selected and weights of shape (T, k); "
                         f"found {len(data.tokens)} tokens, selected {data.selected.shape}, "
                         f"weights {data.weights.shape}")
    label_w = 0.4 + style.CHAR_INCHES * max(map(len, data.tokens), default=1)
    col = min(0.48, (style.SLIDE_INCHES[0] - 1.6 - label_w) / E)  # inches per expert
    bias_h = 1.3 if data.expert_bias is not None else 0.0
    row = max(style.LINE_INCHES, min(0.34, (style.SLIDE_INCHES[1] - 1.9 - bias_h) / T))  # inches per token
    fig = plt.figure(figsize=(col * E + label_w + 1.6, row * T + bias_h + 1.9))
    if data.expert_bias is not None:  # a bias strip above, sharing the expert axis; colour bar right
        grid = fig.add_gridspec(2, 2, width_ratios=[1, 0.025], height_ratios=[bias_h, row * T],
                                wspace=0.03, hspace=0.08)
        ax = fig.add_subplot(grid[1, 0])
        ax_bias = fig.add_subplot(grid[0, 0], sharex=ax)
        ax_bias.bar(np.arange(E), data.expert_bias, color=style.OKABE_ITO["reddish purple"], width=0.8)
        ax_bias.axhline(0, color=style.MUTED, lw=0.6)
        ax_bias.set_ylabel("expert\nbias")
        ax_bias.tick_params(labelbottom=False)
        ax_bias.yaxis.set_major_locator(plt.MaxNLocator(3))
        ax_bias.set_title(title)
    else:
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 0.025], wspace=0.03)
        ax = fig.add_subplot(grid[0, 0])
        ax.set_title(title)
    cax = fig.add_subplot(grid[-1, 1])
    im = ax.imshow(data.scores, aspect="auto", cmap=style.LIGHT_SEQUENTIAL, vmin=0.0, vmax=1.0, interpolation="nearest")
    for t in range(T):
        for e, w in zip(data.selected[t], data.weights[t]):
            ax.add_patch(Rectangle((e - 0.5, t - 0.5), 1, 1, fill=False, edgecolor=style.INK, lw=2.2))
            ax.text(e, t, weight_label(w), ha="center", va="center", color=style.INK,
                    bbox=dict(boxstyle="square,pad=0.08", fc=style.PAPER, ec="none", alpha=0.85))
    ax.set_yticks(np.arange(T), data.tokens, family=style.MONO)
    step = style.every(E, int(col * E / 0.28))
    ax.set_xticks(np.arange(0, E, step), [str(e) for e in range(0, E, step)])
    ax.set_xlabel("expert (outlined: the chosen k, with their mixing weight)")
    ax.set_ylabel("token")
    fig.colorbar(im, cax=cax, label="sigmoid score")
    return data, fig


EXPLORER_MAX_TOKENS = 64  # one heatmap row per token: a longer text is cut, and the explorer says so


@torch.no_grad()
def router_explorer(model, tokenizer, text: str):
    """A widget: type a text, choose a MoE layer, see the router's scores and choices for each of
    its tokens. `widget.state` holds what it shows (the tokens, the layer, the figure's data)."""
    import ipywidgets as widgets
    from IPython.display import display

    cfg = model.config
    moe_layers = cfg.moe_layers
    if not moe_layers:
        return widgets.HTML(f"<b>{html.escape(cfg.model_type)}</b>: no MoE layer in this model, so no router to explore.")
    box = widgets.Textarea(value=text, continuous_update=False, description="text",
                           layout=widgets.Layout(width="95%", height="4.5em"))
    options = [(f"layer {i} ({'attention' if cfg.is_attention_layer(i) else 'conv'} + MoE)", i) for i in moe_layers]
    choice = widgets.Dropdown(options=options, value=moe_layers[0], description="MoE layer")
    out = widgets.Output()
    state: dict = {}

    def route(_=None) -> None:  # one forward pass per text; switching layers only redraws
        ids = tokenizer.encode(box.value)
        state["cut"] = len(ids) > EXPLORER_MAX_TOKENS
        note.value = (f"(the first {EXPLORER_MAX_TOKENS} of {len(ids)} tokens) " if state["cut"] else "") + dense_note
        ids = ids[:EXPLORER_MAX_TOKENS]
        state.update(ids=ids, tokens=tokenizer.tokens(ids, visible_whitespace=True))
        if ids:
            cap = Capture("layers.*.moe.scores", "layers.*.moe.selected", "layers.*.moe.weights")
            model(torch.tensor([ids], device=model.device), capture=cap)
            state["capture"] = cap
        draw()

    def draw(_=None) -> None:
        i = choice.value
        state["layer"] = i
        with out:
            out.clear_output(wait=True)
            if not state["ids"]:
                state["data"] = None
                display(widgets.HTML("<i>Type some text.</i>"))
                return
            cap = state["capture"]
            state["data"], fig = plot_router_scores(
                state["tokens"], cap[f"layers.{i}.moe.scores"][0], cap[f"layers.{i}.moe.selected"][0],
                cap[f"layers.{i}.moe.weights"][0], model.layers[i].feed_forward.expert_bias,
                title=f"Router of layer {i}")
            display(fig)
            plt.close(fig)

    dense = cfg.dense_layers
    dense_note = f"Layers {html.escape(str(dense))} are dense (no router)." if dense else ""
    note = widgets.HTML(dense_note)
    box.observe(route, names="value")
    choice.observe(draw, names="value")
    route()
    widget = widgets.VBox([box, widgets.HBox([choice, note]), out])
    widget.state = state
    return widget


__all__ = ["RouterScores", "plot_router_scores", "router_explorer", "weight_label"]
