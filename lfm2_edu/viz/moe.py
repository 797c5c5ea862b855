"""Figures for the MoE layer (chapter 06): what the router scores and chooses, token by token.

    data, fig = plot_router_scores(tokens, scores, selected, weights, expert_bias)
    widget = router_explorer(model, tokenizer, text)     # pick a MoE layer, see its heatmap
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from ..trace import Capture


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


def plot_router_scores(tokens: list[str], scores, selected, weights, expert_bias=None,
                       title: str = "Router scores") -> tuple[RouterScores, plt.Figure]:
    """Heatmap tokens x experts of the sigmoid scores; each token's k chosen experts are boxed and
    labelled with their mixing weight. With an expert_bias (E,), a strip above shows it.

    scores (T, E), selected (T, k), weights (T, k): tensors or arrays of one sequence.
    """
    data = RouterScores(list(tokens), _numpy(scores), _numpy(selected).astype(int), _numpy(weights),
                        None if expert_bias is None else _numpy(expert_bias), title)
    T, E = data.scores.shape
    if len(data.tokens) != T or data.selected.shape[0] != T or data.weights.shape != data.selected.shape:
        raise ValueError(f"plot_router_scores: expected {T} tokens, selected and weights of shape (T, k); "
                         f"found {len(data.tokens)} tokens, selected {data.selected.shape}, "
                         f"weights {data.weights.shape}")
    width = min(18.0, max(6.0, 0.32 * E + 2.5))
    height = min(14.0, 0.3 * T + (2.6 if data.expert_bias is not None else 1.8))
    fig = plt.figure(figsize=(width, height), dpi=90)
    if data.expert_bias is not None:  # a bias strip above, sharing the expert axis; colour bar right
        grid = fig.add_gridspec(2, 2, width_ratios=[1, 0.025], height_ratios=[1.2, max(2.0, 0.3 * T)],
                                wspace=0.03, hspace=0.08)
        ax = fig.add_subplot(grid[1, 0])
        ax_bias = fig.add_subplot(grid[0, 0], sharex=ax)
        ax_bias.bar(np.arange(E), data.expert_bias, color="tab:purple", width=0.8)
        ax_bias.axhline(0, color="grey", lw=0.6)
        ax_bias.set_ylabel("expert\nbias", fontsize=8)
        ax_bias.tick_params(labelsize=7, labelbottom=False)
        ax_bias.set_title(title)
    else:
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 0.025], wspace=0.03)
        ax = fig.add_subplot(grid[0, 0])
        ax.set_title(title)
    cax = fig.add_subplot(grid[-1, 1])
    im = ax.imshow(data.scores, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    for t in range(T):
        for e, w in zip(data.selected[t], data.weights[t]):
            ax.add_patch(Rectangle((e - 0.5, t - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.6))
            if E <= 48:
                ax.text(e, t, f"{w:.2f}", ha="center", va="center", fontsize=6, color="white",
                        bbox=dict(boxstyle="square,pad=0.05", fc="black", alpha=0.4, lw=0))
    ax.set_yticks(np.arange(T))
    ax.set_yticklabels(data.tokens, fontsize=8)
    ax.set_xticks(np.arange(E))
    ax.set_xticklabels([str(e) for e in range(E)], fontsize=7 if E <= 32 else 5)
    ax.set_xlabel("expert (red boxes: the chosen k, labelled with their mixing weight)")
    ax.set_ylabel("token")
    fig.colorbar(im, cax=cax, label="sigmoid score")
    return data, fig


@torch.no_grad()
def router_explorer(model, tokenizer, text: str):
    """A widget: choose a MoE layer, see the router's scores and choices for each token of `text`."""
    import ipywidgets as widgets
    from IPython.display import display

    cfg = model.config
    moe_layers = cfg.moe_layers
    if not moe_layers:
        return widgets.HTML(f"<b>{html.escape(cfg.model_type)}</b>: no MoE layer in this model, so no router to explore.")
    ids = tokenizer.encode(text)
    tokens = tokenizer.tokens(ids, visible_whitespace=True)
    cap = Capture("layers.*.moe.scores", "layers.*.moe.selected", "layers.*.moe.weights")
    model(torch.tensor([ids], device=model.device), capture=cap)
    options = [(f"layer {i} ({'attention' if cfg.is_attention_layer(i) else 'conv'} + MoE)", i) for i in moe_layers]
    choice = widgets.Dropdown(options=options, value=moe_layers[0], description="MoE layer")
    out = widgets.Output()

    def draw(change=None) -> None:
        i = choice.value
        bias = model.layers[i].feed_forward.expert_bias
        with out:
            out.clear_output(wait=True)
            _, fig = plot_router_scores(tokens, cap[f"layers.{i}.moe.scores"][0], cap[f"layers.{i}.moe.selected"][0],
                                        cap[f"layers.{i}.moe.weights"][0], bias, title=f"Router of layer {i}")
            display(fig)
            plt.close(fig)

    choice.observe(draw, names="value")
    draw()
    dense = cfg.dense_layers
    note = widgets.HTML(f"Layers {html.escape(str(dense))} are dense (no router)." if dense else "")
    return widgets.VBox([widgets.HBox([choice, note]), out])


__all__ = ["RouterScores", "plot_router_scores", "router_explorer"]
