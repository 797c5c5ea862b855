"""The whole-model figures (chapter 07): the layer stack and the parameter counts."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lfm2_edu import LFM2Config, count_parameters, published  # noqa: E402
from lfm2_edu.viz.model import layer_difference_table, plot_layer_stack, plot_parameter_counts  # noqa: E402
from reference import tiny_config  # noqa: E402

C, A = "conv", "full_attention"


@pytest.mark.parametrize("config", [tiny_config(), tiny_config(model_type="lfm2", layer_types=[A, C, C, A])],
                         ids=["moe", "dense"])
def test_layer_stack_follows_the_config(config):
    rows, fig = plot_layer_stack(config)
    assert [r.mixer for r in rows] == config.layer_types
    assert [r.ffn == "moe" for r in rows] == [config.is_moe_layer(i) for i in range(4)]
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * config.num_hidden_layers + 2  # mixer + ffn per layer, embedding, head
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("attention") == len(config.attention_layers)
    assert sum("MoE" in t for t in texts) == len(config.moe_layers)
    plt.close(fig)


def test_parameter_counts_figure_shows_total_and_active():
    models = {"tiny": tiny_config(), "LFM2-8B-A1B": LFM2Config()}
    counts, fig = plot_parameter_counts(models)
    assert counts["LFM2-8B-A1B"] == count_parameters(LFM2Config())
    assert counts["tiny"].active < counts["tiny"].total
    for ax, c in zip(fig.axes, counts.values()):
        groups = [g for g, (t, _) in c.by_group.items() if t]
        widths = [p.get_width() for p in ax.patches]
        assert widths == [c.by_group[g][0] for g in groups] + [c.by_group[g][1] for g in groups]
    assert f"{published.TOTAL_PARAMETERS_B}B total, {published.ACTIVE_PARAMETERS_B}B active" in fig.axes[1].get_title()
    plt.close(fig)


def test_layer_difference_table():
    config = tiny_config()
    text = layer_difference_table(config, [0.0, 1e-7, 2e-6, 3e-5], ["", "", "", "last"])
    lines = text.splitlines()
    assert len(lines) == 5 and "attention" in lines[2] and "moe" in lines[2] and lines[4].endswith("last")
    assert "3.00e-05" in lines[4]
    with pytest.raises(ValueError, match="expected 4 differences"):
        layer_difference_table(config, [0.0])
