"""Chapter 12's figures: where the router's gradient comes from, specialisation per balancing
recipe, and the experts a decode batch touches."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from . import style


def sends_gradient(grad: dict, threshold: float = 1e-6) -> torch.Tensor:
    """(N, E) bool: the (token, expert) pairs of a variants.router_gradient result whose logit
    gradient exceeds `threshold` times the largest, so that rounding does not count as a gradient."""
    size = grad["logit_grad"].abs()
    return size > threshold * size.max()


@style.figure
def plot_router_gradient(grads: dict[str, dict], num_experts: int) -> tuple[dict, plt.Figure]:
    """Which (token, expert) pairs send gradient into the router, one panel per router (filled:
    more than rounding). grads: name -> variants.router_gradient(block, x)."""
    sends = {name: sends_gradient(g) for name, g in grads.items()}
    fig, axes = plt.subplots(1, len(sends), figsize=(13.3, 4.8), sharey=True, squeeze=False)
    for ax, (name, s) in zip(axes[0], sends.items()):
        ax.imshow(s.T.float().numpy(), aspect="auto", cmap=style.LIGHT_SEQUENTIAL, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(f"{name}\n{int(s.any(0).sum())} of {num_experts} rows")
        ax.set_xlabel("token")
    axes[0][0].set_ylabel("expert (router row)")
    fig.suptitle("Which (token, expert) pairs send gradient into the router (filled)")
    fig.tight_layout()
    return {"sends": sends}, fig


@style.figure
def plot_specialisation_by_recipe(information: dict[str, dict[int, float]]) -> tuple[dict, plt.Figure]:
    """I(expert; domain) in bits per MoE layer, one line per model (dashed: the untrained control).
    information: model name -> {MoE layer: bits}."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for n, (name, per_layer) in enumerate(information.items()):
        ax.plot(list(per_layer), list(per_layer.values()), marker="os^Dv"[n % 5], label=name,
                color=style.CATEGORICAL[n % len(style.CATEGORICAL)], ls="--" if name == "untrained" else "-")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("I(expert; domain), bits")
    ax.legend()
    ax.set_title("Specialisation by kind of text, per MoE layer (held-out windows)")
    fig.tight_layout()
    return {"information": information}, fig


@style.figure
def plot_experts_touched(measured: dict[int, float], uniform: dict[int, float], num_experts: int,
                         k: int) -> tuple[dict, plt.Figure]:
    """Distinct experts per MoE layer that a decode batch of B sequences touches: measured
    (variants.experts_touched) and under uniform routing (variants.uniform_experts_touched)."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    ax.plot(list(measured), list(measured.values()), marker="o", color=style.CATEGORICAL[0],
            label="measured (mean over MoE layers)")
    ax.plot(list(uniform), list(uniform.values()), marker="s", ls="--", color=style.CATEGORICAL[1],
            label="uniform routing: E(1 - (1 - k/E)^B)")
    ax.axhline(num_experts, color=style.REFERENCE, lw=1, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B (sequences decoded together)")
    ax.set_ylabel("distinct experts per layer")
    ax.set_title(f"Experts a decode step touches per MoE layer ({num_experts} experts, top-{k})")
    ax.legend()
    fig.tight_layout()
    return {"measured": measured, "uniform": uniform}, fig


__all__ = ["plot_experts_touched", "plot_router_gradient", "plot_specialisation_by_recipe", "sends_gradient"]
