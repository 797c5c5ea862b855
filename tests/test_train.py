"""Training: the loss goes down, and the expert-bias update moves towards balance."""

import math

import pytest
import torch

from lfm2_edu import LFM2Model
from lfm2_edu.routing import expert_load, max_violation
from lfm2_edu.train import (TrainConfig, init_weights, load_balancing_loss, router_z_loss, train,
                            update_expert_bias)
from reference import tiny_config


def repeating_batches(vocab, batch=8, T=16, seed=0):
    """Learnable data: a few fixed sequences, drawn at random."""
    g = torch.Generator().manual_seed(seed)
    sequences = torch.randint(3, vocab, (4, T + 1), generator=g)
    while True:
        yield sequences[torch.randint(0, 4, (batch,), generator=g)]


def test_short_run_lowers_the_loss():
    torch.manual_seed(0)
    model = init_weights(LFM2Model(tiny_config()))
    log = train(model, repeating_batches(97), TrainConfig(steps=30, lr=1e-2, warmup_steps=5, log_every=1),
                progress=False)
    first, last = sum(log.loss[:5]) / 5, sum(log.loss[-5:]) / 5
    assert last < first - 1.0, f"loss went from {first:.2f} to {last:.2f}"
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_bias_update_favours_underloaded_experts():
    model = LFM2Model(tiny_config())
    moe = model.layers[1].feed_forward
    moe.expert_bias.zero_()
    load = torch.tensor([10, 0, 5, 5, 3, 7])  # mean 5
    update_expert_bias(model, {1: load}, rate=0.01)
    assert torch.equal(moe.expert_bias, torch.tensor([-0.01, 0.01, 0.0, 0.0, 0.01, -0.01]))


def test_training_with_the_bias_update_balances_the_load():
    """A router pushed towards a few experts: the bias update spreads the load, its absence does not."""
    results = {}
    for balance in ("bias", "none"):
        torch.manual_seed(0)
        model = init_weights(LFM2Model(tiny_config(num_experts=8)))
        with torch.no_grad():  # start unbalanced: experts 0 and 1 win for almost every token
            for layer in model.layers[1:]:
                layer.feed_forward.gate.weight[:2] += 0.5 * layer.ffn_norm.weight.sign()
        cfg = TrainConfig(steps=40, lr=1e-3, warmup_steps=1, log_every=39, balance=balance, bias_update_rate=0.01)
        log = train(model, repeating_batches(97, batch=8, T=32, seed=1), cfg, progress=False)
        loads = [torch.tensor(log.load[-1][i]) for i in log.load[-1]]
        results[balance] = max(max_violation(load) for load in loads)
        if balance == "bias":
            bias = model.layers[1].feed_forward.expert_bias
            assert bias[:2].max() < 0 < bias[2:].max(), "the favoured experts' bias should have gone down"
    assert results["bias"] < results["none"], results


def test_max_violation_known_values():
    assert max_violation(torch.tensor([5, 5, 5, 5])) == 0.0
    assert max_violation(torch.tensor([8, 0, 0, 0])) == 3.0  # one expert takes everything: E - 1
    assert abs(max_violation(torch.tensor([6, 4, 5, 5])) - 0.2) < 1e-6
    assert torch.equal(expert_load(torch.tensor([[0, 1], [1, 2]]), 4), torch.tensor([1, 2, 1, 0]))


def test_load_balancing_loss_by_hand():
    # 3 tokens, 4 experts, top-2: slots go to experts 0, 1 | 0, 2 | 0, 1 -> f = (3, 2, 1, 0) / 6
    scores = torch.tensor([[0.8, 0.6, 0.2, 0.2], [0.5, 0.1, 0.3, 0.1], [0.9, 0.7, 0.1, 0.3]], requires_grad=True)
    selected = torch.tensor([[0, 1], [0, 2], [0, 1]])
    P = [(0.8 / 1.8 + 0.5 / 1.0 + 0.9 / 2.0) / 3, (0.6 / 1.8 + 0.1 / 1.0 + 0.7 / 2.0) / 3,
         (0.2 / 1.8 + 0.3 / 1.0 + 0.1 / 2.0) / 3, (0.2 / 1.8 + 0.1 / 1.0 + 0.3 / 2.0) / 3]
    f = [3 / 6, 2 / 6, 1 / 6, 0 / 6]
    by_hand = 0.01 * 4 * sum(fi * pi for fi, pi in zip(f, P))
    loss = load_balancing_loss(scores, selected, alpha=0.01)
    assert abs(loss.item() - by_hand) < 1e-7
    loss.backward()  # the gradient reaches the router's scores through P
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_load_balancing_loss_is_alpha_when_uniform():
    scores = torch.full((4, 4), 0.5)
    selected = torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]])  # every expert 2 of the 8 slots
    assert abs(float(load_balancing_loss(scores, selected, alpha=0.3)) - 0.3) < 1e-6


def test_router_z_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    lse = [math.log(2.0), math.log(math.exp(1.0) + math.exp(2.0))]
    assert abs(float(router_z_loss(logits, beta=0.5)) - 0.5 * (lse[0] ** 2 + lse[1] ** 2) / 2) < 1e-6


def test_aux_loss_run_ends_less_imbalanced_than_no_balancing():
    """The same skewed start: the auxiliary loss spreads the load, no balancing does not."""
    results = {}
    for balance in ("aux_loss", "none"):
        torch.manual_seed(0)
        model = init_weights(LFM2Model(tiny_config(num_experts=8, use_expert_bias=False)))
        with torch.no_grad():  # start unbalanced: experts 0 and 1 win for almost every token
            for layer in model.layers[1:]:
                layer.feed_forward.gate.weight[:2] += 0.5 * layer.ffn_norm.weight.sign()
        cfg = TrainConfig(steps=40, lr=3e-3, warmup_steps=1, log_every=39, balance=balance, aux_loss_coef=0.1,
                          z_loss_coef=1e-3)
        log = train(model, repeating_batches(97, batch=8, T=32, seed=1), cfg, progress=False)
        results[balance] = max(max_violation(torch.tensor(load)) for load in log.load[-1].values())
        assert (log.aux_loss[-1] > 0) == (balance == "aux_loss")
    assert results["aux_loss"] < results["none"], results


def test_train_rejects_an_unknown_balancing():
    model = init_weights(LFM2Model(tiny_config()))
    with pytest.raises(ValueError, match="expected balance to be one of"):
        train(model, repeating_batches(97), TrainConfig(steps=1, balance=True), progress=False)
