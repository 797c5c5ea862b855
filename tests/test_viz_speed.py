"""Chapter 13's figures: the roofline and the experts a batch touches (the data they draw)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lfm2_edu.viz import style  # noqa: E402
from lfm2_edu.viz.speed import plot_experts_touched, plot_roofline  # noqa: E402


def test_roofline_points_sit_under_the_roof_at_their_intensity():
    bandwidth, peak = 20e9, 400e9  # ridge at 20 flop/byte
    data, fig = plot_roofline(bandwidth, peak, {"decode": (0.5, 2e9), "prefill": (64.0, 150e9), "roof only": (1.0, None)})
    assert data["ridge"] == pytest.approx(20.0)
    assert data["points"]["decode"]["allowed"] == pytest.approx(10e9)  # memory-bound: bandwidth x intensity
    assert data["points"]["prefill"]["allowed"] == pytest.approx(peak)  # past the ridge: the peak
    assert data["points"]["decode"]["reached"] == 2e9 and data["points"]["roof only"]["reached"] is None
    assert style.audit(fig).problems() == []
    plt.close(fig)


def test_experts_touched_keeps_the_curves_and_refuses_a_wrong_length():
    data, fig = plot_experts_touched([1, 2, 4], {"measured": [2, 3.5, 6.0]}, num_experts=16, k=2)
    assert np.array_equal(data["batch_sizes"], [1, 2, 4]) and np.array_equal(data["touched"]["measured"], [2, 3.5, 6.0])
    assert style.audit(fig).problems() == []
    plt.close(fig)
    with pytest.raises(ValueError, match="expected 3 values for 'measured', found 2"):
        plot_experts_touched([1, 2, 4], {"measured": [2, 3]}, num_experts=16, k=2)
    with pytest.raises(ValueError, match="expected a positive bandwidth"):
        plot_roofline(0, 1e9, {})
