"""Chapter 13's figures: the roofline and the decode step's intensity by batch (the data they draw)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lfm2_edu.viz import style  # noqa: E402
from lfm2_edu.viz.speed import plot_batch_intensity, plot_roofline  # noqa: E402


def test_roofline_points_sit_under_the_roof_at_their_intensity():
    bandwidth, peak = 20e9, 400e9  # ridge at 20 flop/byte
    data, fig = plot_roofline(bandwidth, peak, {"decode": (0.5, 2e9), "prefill": (64.0, 150e9), "roof only": (1.0, None)})
    assert data["ridge"] == pytest.approx(20.0)
    assert data["points"]["decode"]["allowed"] == pytest.approx(10e9)  # memory-bound: bandwidth x intensity
    assert data["points"]["prefill"]["allowed"] == pytest.approx(peak)  # past the ridge: the peak
    assert data["points"]["decode"]["memory_bound"] and not data["points"]["prefill"]["memory_bound"]
    assert data["points"]["decode"]["reached"] == 2e9 and data["points"]["roof only"]["reached"] is None
    assert style.audit(fig).problems() == []
    plt.close(fig)
    with pytest.raises(ValueError, match="expected a positive bandwidth"):
        plot_roofline(0, 1e9, {})


def test_batch_intensity_finds_the_first_batch_at_the_ridge():
    batches = [1, 2, 4, 8, 16]
    dense = [b * 1.0 for b in batches]  # bf16 dense: B flop/byte
    moe = [0.2 * b for b in batches]  # never reaches a ridge of 8 within these batches
    data, fig = plot_batch_intensity(batches, {"dense": dense, "moe": moe}, ridge=8.0)
    assert data["crosses_at"] == {"dense": 8, "moe": None}  # 8 >= 8: the ridge itself counts as reached
    assert np.array_equal(data["intensity"]["dense"], dense) and data["ridge"] == 8.0
    assert style.audit(fig).problems() == []
    plt.close(fig)
    with pytest.raises(ValueError, match="expected 5 values for 'moe', found 2"):
        plot_batch_intensity(batches, {"moe": [1, 2]}, ridge=8.0)
    with pytest.raises(ValueError, match="increasing batch sizes and a positive ridge"):
        plot_batch_intensity([4, 2], {"moe": [1, 2]}, ridge=8.0)
