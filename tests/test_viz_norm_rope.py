"""Chapter 03's figures: the data they draw is what the model and RoPE compute."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lfm2_edu import Capture  # noqa: E402
from lfm2_edu.viz import norm_rope  # noqa: E402
from reference import tiny_config  # noqa: E402
from test_cache import random_model  # noqa: E402


@torch.no_grad()
def test_norm_inputs_are_the_residual_streams_and_weights():
    config = tiny_config()
    model = random_model(config)
    ids = torch.randint(0, config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(0))
    tokens = [f"t{j}" for j in range(7)]
    data, fig = norm_rope.norm_inputs(model, ids, tokens)
    plt.close(fig)
    n = config.num_hidden_layers
    assert data.rms.shape == (n + 1, 7) and data.names[-1] == "final norm" and data.tokens == tokens
    cap = Capture("layers.*.input", f"layers.{n - 1}.output", "final_norm")
    model(ids, capture=cap)
    for i in range(n):
        expected = cap[f"layers.{i}.input"][0].pow(2).mean(-1).sqrt()
        assert torch.allclose(data.rms[i], expected, rtol=1e-5)
    # the last row is what the final norm divides by: w * h / sqrt(rms^2 + eps) is its output
    h_last, w = cap[f"layers.{n - 1}.output"][0], model.embedding_norm.weight
    normed = h_last / (data.rms[-1][:, None] ** 2 + config.norm_eps).sqrt() * w
    assert torch.allclose(normed, cap["final_norm"][0], atol=1e-5)
    assert len(data.weights) == 2 * n + 1
    assert torch.equal(data.weights[0], model.layers[0].operator_norm.weight)
    assert torch.equal(data.weights[1], model.layers[0].ffn_norm.weight)
    assert torch.equal(data.weights[-1], w)


def complex_scores(q, k, inv_freq, n_positions):
    """q.k of RoPE-rotated vectors, written independently: pair i is the complex number
    x[i] + 1j * x[i + d/2], turned by e^{i m inv_freq[i]} at position m."""
    half = q.shape[0] // 2
    qc = torch.complex(q[:half].double(), q[half:].double())
    kc = torch.complex(k[:half].double(), k[half:].double())
    pos = torch.arange(n_positions, dtype=torch.float64)
    rot = torch.exp(1j * pos[:, None] * inv_freq.double())  # (P, d/2)
    return ((qc * rot) @ (kc * rot).conj().T).real  # (P, P): Re(sum q_m conj(k_n))


@pytest.mark.parametrize("head_dim,theta", [(8, 10_000.0), (32, 1e6), (64, 1e6)])
def test_rope_rotation_matches_complex_rotation(head_dim, theta):
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(head_dim, generator=gen), torch.randn(head_dim, generator=gen)
    data, fig = norm_rope.rope_rotation(head_dim, theta, n_positions=40, q=q, k=k)
    plt.close(fig)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    assert torch.allclose(data.inv_freq.double(), inv_freq, rtol=1e-6)
    assert torch.allclose(data.angles, torch.arange(40)[:, None].float() * data.inv_freq)
    assert torch.allclose(data.wavelengths, 2 * math.pi / data.inv_freq)
    expected = complex_scores(q, k, inv_freq, 40)
    assert torch.allclose(data.scores.double(), expected, atol=1e-4)
    assert norm_rope.toeplitz_error(data.scores) <= 1e-4
    assert math.isclose(float(data.by_distance[0]), float(q @ k), rel_tol=1e-4, abs_tol=1e-4)
    assert data.by_distance.shape == (40,)


def test_toeplitz_error_detects_position_dependence():
    toeplitz = torch.tensor([[1.0, 2.0, 3.0], [4.0, 1.0, 2.0], [5.0, 4.0, 1.0]])
    assert norm_rope.toeplitz_error(toeplitz) == 0.0
    assert norm_rope.toeplitz_error(torch.arange(9.0).view(3, 3) ** 2) > 1.0


def test_rope_rotation_without_vectors_is_seeded():
    a, fig_a = norm_rope.rope_rotation(16, 1e6, n_positions=10)
    b, fig_b = norm_rope.rope_rotation(16, 1e6, n_positions=10)
    plt.close(fig_a)
    plt.close(fig_b)
    assert torch.equal(a.scores, b.scores)
