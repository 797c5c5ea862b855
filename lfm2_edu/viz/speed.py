"""Chapter 13's figures: the roofline of a decode step, and the experts a batch touches.

A roofline (Williams, Waterman and Patterson, 2009) plots the flops per second a computation can
reach against its arithmetic intensity (flops per byte read): min(peak flops, bandwidth x
intensity). Below the ridge point intensity = peak / bandwidth, memory sets the speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import style

MARKERS = "osD^v"  # one marker per point as well as one colour: never hue alone


@style.figure
def plot_roofline(bandwidth: float, peak_flops: float, points: Mapping[str, tuple[float, float | None]]
                  ) -> tuple[dict, plt.Figure]:
    """bandwidth (bytes/s) and peak_flops (flop/s), both measured; points: label -> (intensity in
    flops per byte, measured flop/s or None). Each point sits on the roof at its intensity (what
    the machine allows) and, where measured, at what was reached."""
    if bandwidth <= 0 or peak_flops <= 0:
        raise ValueError(f"plot_roofline: expected a positive bandwidth and peak, found {bandwidth} and {peak_flops}")
    ridge = peak_flops / bandwidth  # flops per byte where the two limits meet
    xs = np.array([i for i, _ in points.values()] + [ridge])
    grid = np.logspace(np.log10(xs.min() / 4), np.log10(xs.max() * 8), 200)
    roof = np.minimum(peak_flops, bandwidth * grid)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ax.plot(grid, roof / 1e9, color=style.INK, lw=2.5, label="roof: min(peak, bandwidth x intensity)")
    ax.axvline(ridge, ls="--", color=style.REFERENCE, lw=1)
    ax.annotate(f"ridge point\n{ridge:.3g} flop/byte", (ridge, peak_flops / 1e9), xytext=(8, -40),
                textcoords="offset points")
    data = {"ridge": ridge, "points": {}}
    for n, (label, (intensity, reached)) in enumerate(points.items()):
        colour, marker = style.CATEGORICAL[n % len(style.CATEGORICAL)], MARKERS[n % len(MARKERS)]
        allowed = min(peak_flops, bandwidth * intensity)
        ax.plot([intensity], [allowed / 1e9], marker, mfc="none", mec=colour, mew=2, ms=11)
        if reached is not None:
            ax.plot([intensity], [reached / 1e9], marker, color=colour, ms=9)
            ax.plot([intensity, intensity], [reached / 1e9, allowed / 1e9], ":", color=colour, lw=1.5)
        ax.plot([], [], marker, color=colour, label=f"{label} (hollow: its roof, filled: measured)"
                if reached is not None else f"{label} (its roof)")
        data["points"][label] = {"intensity": intensity, "allowed": allowed, "reached": reached}
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flops per byte of weights read)")
    ax.set_ylabel("Gflop/s")
    ax.set_title("Roofline of this machine (measured bandwidth and peak)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=style.FONT_PT["text"])  # the measured markers sit low
    return data, fig


@style.figure
def plot_experts_touched(batch_sizes: Sequence[int], touched: Mapping[str, Sequence[float]], num_experts: int,
                         k: int) -> tuple[dict, plt.Figure]:
    """Mean distinct experts per MoE layer touched by one decode step of a batch, against the batch
    size: touched maps a label (measured routing, random routing) to one value per batch size."""
    batch_sizes = np.asarray(batch_sizes)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    data = {"batch_sizes": batch_sizes, "touched": {}}
    for n, (label, values) in enumerate(touched.items()):
        values = np.asarray(values, dtype=float)
        if values.shape != batch_sizes.shape:
            raise ValueError(f"plot_experts_touched: expected {len(batch_sizes)} values for {label!r}, found {len(values)}")
        ax.plot(batch_sizes, values, "-" + MARKERS[n % len(MARKERS)], color=style.CATEGORICAL[n % len(style.CATEGORICAL)],
                lw=2, ms=8, label=label)
        data["touched"][label] = values
    ax.plot(batch_sizes, np.minimum(batch_sizes * k, num_experts), "--", color=style.REFERENCE, lw=1,
            label=f"no sharing at all: min(B x k, E), k={k}")
    ax.axhline(num_experts, ls=":", color=style.MUTED, lw=1.5, label=f"every expert: E={num_experts}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B (sequences decoded together)")
    ax.set_ylabel("distinct experts read per MoE layer")
    ax.set_title("Experts one decode step reads, by batch size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=style.FONT_PT["text"])
    return data, fig
