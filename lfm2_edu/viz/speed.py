"""Chapter 13's figures: the roofline of this machine, and the arithmetic intensity of a decode
step as the batch grows.

A roofline (Williams, Waterman and Patterson, 2009) plots the flops per second a computation can
reach against its arithmetic intensity (flops per byte read): min(peak flops, bandwidth x
intensity). Below the ridge point, intensity = peak / bandwidth, memory sets the speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import style

MARKERS = "osD^v"  # one marker per series as well as one colour: never hue alone


@style.figure
def plot_roofline(bandwidth: float, peak_flops: float, points: Mapping[str, tuple[float, float | None]]
                  ) -> tuple[dict, plt.Figure]:
    """The roofline of this machine, with each measured computation on it. bandwidth (bytes/s)
    and peak_flops (flop/s), both measured; points: label -> (intensity in flops per byte,
    measured flop/s or None). Each point sits on the roof at its intensity (what the machine
    allows) and, where measured, at what was reached."""
    if not (bandwidth > 0 and peak_flops > 0):
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
        data["points"][label] = {"intensity": intensity, "allowed": allowed, "reached": reached,
                                 "memory_bound": intensity < ridge}
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flops per byte of weights read)")
    ax.set_ylabel("Gflop/s")
    ax.set_title("Roofline of this machine (measured bandwidth and peak)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below the axes: no point or label hidden
    return data, fig


@style.figure
def plot_batch_intensity(batch_sizes: Sequence[int], intensity: Mapping[str, Sequence[float]], ridge: float
                         ) -> tuple[dict, plt.Figure]:
    """Flops per byte of weights of one decode step against the batch size, one line per model,
    and the roofline's ridge point: below it the step is memory-bound. intensity: label -> one
    value per batch size. The data holds, per label, the first batch size at or above the ridge
    (None where every batch shown stays below it)."""
    batch_sizes = np.asarray(batch_sizes)
    if not ridge > 0 or batch_sizes.ndim != 1 or not len(batch_sizes) or (np.diff(batch_sizes) <= 0).any():
        raise ValueError(f"plot_batch_intensity: expected increasing batch sizes and a positive ridge, found "
                         f"{batch_sizes.tolist()} and {ridge}")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    data = {"batch_sizes": batch_sizes, "ridge": ridge, "intensity": {}, "crosses_at": {}}
    for n, (label, values) in enumerate(intensity.items()):
        values = np.asarray(values, dtype=float)
        if values.shape != batch_sizes.shape:
            raise ValueError(f"plot_batch_intensity: expected {len(batch_sizes)} values for {label!r}, found {len(values)}")
        above = np.flatnonzero(values >= ridge)
        crosses = int(batch_sizes[above[0]]) if len(above) else None
        colour, marker = style.CATEGORICAL[n % len(style.CATEGORICAL)], MARKERS[n % len(MARKERS)]
        where = f"reaches the ridge at B = {crosses}" if crosses else "below the ridge at every B shown"
        ax.plot(batch_sizes, values, "-" + marker, color=colour, lw=2, ms=7, label=f"{label}: {where}")
        if crosses:
            ax.plot([crosses], [values[above[0]]], marker, mfc="none", mec=colour, mew=2, ms=15)
        data["intensity"][label], data["crosses_at"][label] = values, crosses
    ax.axhline(ridge, ls="--", color=style.REFERENCE, lw=1.5, label=f"ridge point of this machine: {ridge:.3g} flop/byte")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B (sequences decoded together)")
    ax.set_ylabel("flops per byte of weights read")
    ax.set_title("A decode step's arithmetic intensity, by batch size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below the axes: no line hidden
    return data, fig


__all__ = ["plot_batch_intensity", "plot_roofline"]
