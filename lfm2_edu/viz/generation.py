"""Figures for generation and the hybrid cache (chapter 08).

    steps, fig = plot_sampling_steps(logits, seen, labels)      # temperature, min-p, repetition penalty
    widget = sampling_explorer(logits, seen, labels)             # the same, with sliders
    memory, fig = plot_cache_memory({"this model": (config, 4)}, lengths, measured)

The sampling figures run the package's own logits processors (lfm2_edu.generate) on one
next-token distribution; the cache figure computes the cache size from the config.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..cache import expected_cache_bytes
from ..config import LFM2Config
from ..generate import RECOMMENDED, Sampling, apply_min_p, apply_repetition_penalty, apply_temperature, process_logits
from . import style


def token_label(tokenizer, token_id: int) -> str:
    """A readable label for one token id; ids the tokenizer does not know (a model whose vocabulary
    is larger than its tokenizer's) are shown as #id."""
    try:
        return tokenizer.token_text(int(token_id), visible_whitespace=True)
    except Exception:
        return f"#{int(token_id)}"


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1)  # removed tokens (-inf) get 0


# ---------------------------------------------------------------------------------- sampling
@dataclass
class SamplingSteps:
    """What `plot_sampling_steps` drew: the n most probable tokens of the model's distribution and
    their probability after each step (softmax over the whole vocabulary)."""

    token_ids: list[int]  # (n,) most probable first, at temperature 1
    labels: list[str]
    seen: np.ndarray  # (n,) bool: in the context, so the repetition penalty applies
    panels: dict[str, dict[str, np.ndarray]]  # panel title -> series name -> (n,) probabilities
    kept: dict[str, int]  # series name -> tokens of the vocabulary left with probability > 0


def sampling_distributions(logits: torch.Tensor, seen: torch.Tensor, temperatures: Sequence[float] = (0.3, 1.5),
                           min_p: float = RECOMMENDED["min_p"],
                           penalties: Sequence[float] = (RECOMMENDED["repetition_penalty"], 1.5),
                           recommended: Mapping[str, float] = RECOMMENDED) -> dict[str, dict[str, torch.Tensor]]:
    """Panel -> series -> (V,) probabilities: the model's distribution, then each step alone, then
    the recommended chain as `generate` applies it. logits (V,) of one position; seen (V,) bool."""
    z = logits.float()[None]  # (1, V)
    seen = seen.bool()[None]  # (1, V)
    base = _probs(z)[0]
    return {
        "temperature: z / T": {"T = 1 (the model)": base,
                               **{f"T = {t:g}": _probs(apply_temperature(z, t))[0] for t in temperatures}},
        f"min-p {min_p:g}: drop p < {min_p:g} x p_max": {
            "the model": base, f"min_p = {min_p:g}": _probs(apply_min_p(z, min_p))[0]},
        "repetition penalty on tokens already seen": {
            "penalty 1 (the model)": base,
            **{f"penalty {p:g}": _probs(apply_repetition_penalty(z, seen, p))[0] for p in penalties}},
        "all three, as generate() applies them": {
            "the model": base,
            ", ".join(f"{k}={v:g}" for k, v in recommended.items()):
                _probs(process_logits(z, seen, Sampling(**recommended)))[0]},
    }


@style.figure
def plot_sampling_steps(logits: torch.Tensor, seen: torch.Tensor, label: Callable[[int], str], top_n: int = 12,
                        title: str = "One next-token distribution, step by step",
                        **settings) -> tuple[SamplingSteps, plt.Figure]:
    """Four panels of grouped bars over the top_n tokens: temperature, min-p, repetition penalty,
    and all three as generate() chains them. Tokens already in the context are marked with *.
    In each group the bars keep the legend's order (the model first, in grey), so a series is
    found by its place as well as its colour.
    label: token id -> text (e.g. lambda i: token_label(tokenizer, i))."""
    dists = sampling_distributions(logits, seen, **settings)
    top = torch.topk(logits.float(), min(top_n, logits.shape[-1])).indices  # (n,)
    seen_top = seen.bool()[top].cpu().numpy()
    data = SamplingSteps(
        token_ids=top.tolist(), labels=[label(i) for i in top.tolist()], seen=seen_top,
        panels={p: {s: v[top].cpu().numpy() for s, v in series.items()} for p, series in dists.items()},
        kept={s: int((v > 0).sum()) for series in dists.values() for s, v in series.items()})
    n = len(data.token_ids)
    fig, axes = plt.subplots(2, 2, figsize=(13.2, 7.4), sharey=True)
    x = np.arange(n)
    names = [f"{lab}*" if s else lab for lab, s in zip(data.labels, data.seen)]
    for ax, (panel, series) in zip(axes.flat, data.panels.items()):
        width = 0.8 / len(series)
        for j, (name, p) in enumerate(series.items()):
            colour = style.LAYER_COLOURS["dense"] if j == 0 else style.CATEGORICAL[j - 1]
            ax.bar(x + (j - (len(series) - 1) / 2) * width, p, width,
                   label=f"{name.replace(', ', chr(10))} ({data.kept[name]} left)",
                   color=colour, hatch="" if j < 2 else "//", edgecolor=style.PAPER if j >= 2 else None)
        ax.set_title(panel)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=60, ha="right", family=style.MONO)
        ax.legend(loc="upper right")
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("probability")
    fig.suptitle(f"{title}\n(top {n} tokens; * = already in the context; 'left' = tokens with probability > 0)")
    fig.tight_layout()
    return data, fig


@style.figure
def _before_after(labels: list[str], before: np.ndarray, after: np.ndarray) -> plt.Figure:
    """The explorer's bars: the model's probabilities (grey, left of each pair) and after the settings."""
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=72)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, before, 0.4, color=style.LAYER_COLOURS["dense"], label="the model (T = 1)")
    ax.bar(x + 0.2, after, 0.4, color=style.CATEGORICAL[0], label="after the settings")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60, ha="right", family=style.MONO)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    return fig


def sampling_explorer(logits: torch.Tensor, seen: torch.Tensor, label: Callable[[int], str], top_n: int = 15):
    """Sliders for temperature, min_p and repetition_penalty over one next-token distribution."""
    import ipywidgets as widgets
    from IPython.display import display

    z = logits.float()[None]  # (1, V)
    seen2 = seen.bool()[None]
    top = torch.topk(z[0], min(top_n, z.shape[-1])).indices
    labels = [f"{label(i)}*" if seen[i] else label(i) for i in top.tolist()]
    base = _probs(z)[0][top].cpu().numpy()
    sliders = {
        "temperature": widgets.FloatSlider(value=RECOMMENDED["temperature"], min=0.05, max=2.0, step=0.05),
        "min_p": widgets.FloatSlider(value=RECOMMENDED["min_p"], min=0.0, max=0.9, step=0.05),
        "repetition_penalty": widgets.FloatSlider(value=RECOMMENDED["repetition_penalty"], min=1.0, max=2.0, step=0.05),
    }
    for name, s in sliders.items():
        s.description = name
        s.style.description_width = "130px"
        s.layout.width = "420px"
    info = widgets.HTML()
    out = widgets.Output()

    def draw(change=None) -> None:
        sampling = Sampling(**{k: s.value for k, s in sliders.items()})
        processed = _probs(process_logits(z, seen2, sampling))[0]
        kept = int((processed > 0).sum())
        top_p = processed[top].cpu().numpy()
        # min_p's cut is relative to the top probability that reaches it (after penalty and temperature)
        before_min_p = _probs(process_logits(z, seen2, replace(sampling, min_p=0.0)))[0]
        cut = sampling.min_p * float(before_min_p.max())
        info.value = (f"min_p cut: p &lt; {sampling.min_p:.2f} &times; {float(before_min_p.max()):.3f} = {cut:.4f} dropped; "
                      f"tokens left: <b>{kept}</b>; most probable: <b>{html.escape(labels[int(np.argmax(top_p))])}</b> "
                      f"at {top_p.max():.2f}")
        with out:
            out.clear_output(wait=True)
            fig = _before_after(labels, base, top_p)
            display(fig)
            plt.close(fig)

    for s in sliders.values():
        s.observe(draw, names="value")
    draw()
    return widgets.VBox([*sliders.values(), info, out])


# ------------------------------------------------------------------------------------ cache
def cache_bytes(config: LFM2Config, context_length: int | Sequence[int], bytes_per_value: int,
                batch: int = 1) -> dict[str, np.ndarray]:
    """The hybrid cache's size after each `context_length`, from the config alone
    (`lfm2_edu.cache.expected_cache_bytes`): conv layers keep (B, H, L-1) values each, whatever the
    length; attention layers keep K and V, (B, nkv, S, d) each. "all_attention" is the same model
    with attention in every layer."""
    S = np.asarray(context_length, dtype=np.int64)
    all_attention = config.replace(layer_types=["full_attention"] * config.num_hidden_layers)
    hybrid = [expected_cache_bytes(config, int(s), bytes_per_value, batch) for s in S.flat]
    out = {kind: np.array([b[kind] for b in hybrid], dtype=np.int64).reshape(S.shape) for kind in ("conv", "full_attention")}
    out["all_attention"] = np.array([expected_cache_bytes(all_attention, int(s), bytes_per_value, batch)["full_attention"]
                                     for s in S.flat], dtype=np.int64).reshape(S.shape)
    return out


def _mb(x):
    return np.asarray(x, dtype=float) / 2**20


@style.figure
def plot_cache_memory(models: Mapping[str, tuple[LFM2Config, int]], lengths: Sequence[int],
                      measured: Mapping[str, Mapping[int, Mapping[str, int]]] | None = None
                      ) -> tuple[dict[str, dict[str, np.ndarray]], plt.Figure]:
    """One panel per model (config, bytes per value): cache MiB against context length for the conv
    layers, the attention layers, their sum, and the same model with attention in every layer.
    measured: model name -> {length: cache.memory_bytes()} drawn as markers."""
    measured = measured or {}
    lengths = np.asarray(sorted(lengths), dtype=np.int64)
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5.2), squeeze=False)
    attention, conv = style.LAYER_COLOURS["attention"], style.LAYER_COLOURS["conv"]
    data = {}
    for ax, (name, (cfg, nbytes)) in zip(axes[0], models.items()):
        ls = lengths[lengths <= cfg.max_position_embeddings]  # up to the model's context limit
        if len(ls) < len(lengths):
            ls = np.append(ls, cfg.max_position_embeddings)
        b = cache_bytes(cfg, ls, nbytes)
        b["total"] = b["conv"] + b["full_attention"]
        data[name] = {"lengths": ls, **b}
        n_attn, n_conv = len(cfg.attention_layers), len(cfg.conv_layers)
        ax.plot(ls, _mb(b["all_attention"]), "--", color=style.MUTED,
                label=f"if all {cfg.num_hidden_layers} layers were attention")
        ax.plot(ls, _mb(b["total"]), color=style.INK, lw=2.5, label="total")
        if n_attn:
            ax.plot(ls, _mb(b["full_attention"]), "-.", color=attention, lw=2, label=f"{n_attn} attention layers (K, V)")
        if n_conv:
            ax.plot(ls, _mb(b["conv"]), ":", color=conv, lw=2.5, label=f"{n_conv} conv layers (last L-1 of B*x)")
        if name in measured:
            ms = sorted(measured[name].items())
            xs = [s for s, _ in ms]
            label = "measured: cache.memory_bytes()"
            for kind, colour, present in (("full_attention", attention, n_attn), ("conv", conv, n_conv)):
                if present:
                    ax.plot(xs, _mb([m[kind] for _, m in ms]), "o", color=colour, ms=7, label=label)
                    label = None
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("cache size (MiB, batch 1)")
        kib = expected_cache_bytes(cfg, 1, nbytes)["full_attention"] / 1024  # per token
        ax.set_title(f"{name}:\n{kib:.3g} KiB more per token, up to {ls[-1]:,} tokens")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper left")
    fig.tight_layout()
    return data, fig


__all__ = ["SamplingSteps", "cache_bytes", "plot_cache_memory", "plot_sampling_steps", "sampling_distributions",
           "sampling_explorer", "token_label"]
