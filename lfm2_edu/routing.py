"""Routing analysis: plain functions over routing tables, and the model runs that produce them.

A routing table is the (N, k) tensor of experts chosen for N tokens at one MoE layer (best first),
as `Capture("layers.{i}.moe.selected")` records it (flatten the batch and time dimensions, or keep
them where the order of tokens matters). Scores are the (N, E) sigmoid scores `s`, selection
scores `s + expert_bias` (see moe.py). Every function returns plain data: tensors, floats, dicts.

The metrics, and where they come from:

    load_i            tokens routed to expert i, over all k slots (a token visits an expert at most once)
    MaxVio            (max_i load_i - mean load) / mean load                  Wang et al. 2024 (Loss-Free Balancing)
    CV                std(load) / mean(load), population std                  (Shazeer et al. 2017's importance loss)
    load entropy      -sum_i p_i log p_i / log E,  p = load / sum(load)       1: uniform, 0: one expert
    domain spec.      N(tokens of domain D routed to i) / N(tokens of D)      OLMoE (Muennighoff et al. 2024) sec. 5
    domain inform.    I(expert; domain) in bits over all routed slots         (a load-independent summary)
    vocabulary spec.  N(occurrences of token x routed to i) / N(x)            OLMoE sec. 5
    consistency       mean over occurrences of max_i N(x routed to i) / N(x): routing by token id alone
    co-activation     N(tokens routed to both i and j) / N(tokens routed to i) OLMoE sec. 5
    consecutive share how often tokens t and t+1 share their first-choice     Mixtral (Jiang et al. 2024) sec. 5
                      expert, or any of their k experts
    noise floor       the MaxVio of a uniformly random router on the same N tokens, E experts, top-k:
                      what chance alone gives on a finite sample (printed beside every MaxVio)
    router entropy    -sum_e p_e log p_e / log E,  p = s / sum_e s (the sigmoid scores of ALL E experts
                      normalised to sum to 1); it hardly varies between tokens: prefer the margin
    margin            k-th minus (k+1)-th largest selection score: how far a token was from another set
                      (this course's measure of how close a routing decision was)
    bias override     sum of the k largest unbiased scores minus the unbiased scores of the chosen k:
                      the router preference the balancing bias overrides at a token, 0 where it changes
                      nothing (this course's; the bias is Loss-Free Balancing's, Wang et al. 2024)
    re-routing        tokens whose set of k experts changes when expert_bias is zeroed (DeepSeek-V3's
                      balancing bias: it only chooses, it never weighs); its control re-routes the same
                      share of tokens to random experts (random_rerouting)

Uniform baselines: a share k/E of the tokens visits each expert; with independent uniform routing
two tokens share a first choice with probability 1/E and any expert with 1 - C(E-k, k) / C(E, k).

Whole analyses, for any checkpoint (chapters 09-11 and `lfm2-edu routing-report` call them):
    held_out_analysis(model, windows)      every metric above per MoE layer, on {domain: (N, T+1)} windows
    compare_routing(model, windows)        the same for the model, its bias zeroed, and an untrained twin
    summary_table(analyses)                one number per metric, layer and model, beside its baseline
    rerouting_control(model, sequences)    zeroing the bias against re-routing as many tokens at random
    simulate_balancing(...)                the bias update on a simulated router (chapter 10's toy)
    expert_profile(token_ids, selected, e) one expert's tokens, domains and contexts (chapter 11's browser)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch

from .moe import Routing, mixing_weights
from .trace import Capture


# ----------------------------------------------------------------------------------- load balance
def expert_load(selected: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Tokens routed to each expert: (E,) counts over all k slots."""
    return torch.bincount(selected.flatten().long(), minlength=num_experts)


def max_violation(load: torch.Tensor) -> float:
    """MaxVio = (max load - mean load) / mean load (Wang et al. 2024, Loss-Free Balancing).

    0 for a perfectly balanced layer; E - 1 when one expert takes every slot (with top-k routing a
    token visits an expert at most once, so the reachable maximum is E/k - 1).
    """
    load = load.float()
    return float((load.max() - load.mean()) / load.mean())


def max_violation_noise_floor(num_tokens: int, num_experts: int, k: int, trials: int = 200,
                              seed: int = 0) -> dict[str, float]:
    """The MaxVio that chance alone gives: a router that sends each of `num_tokens` tokens to k
    distinct experts drawn uniformly, measured `trials` times -> {"mean": .., "p95": ..}.

    A perfectly fair router still shows this much imbalance on a finite sample, so a measured
    MaxVio near the floor says "balanced, as far as this many tokens can tell"; it shrinks like
    1/sqrt(num_tokens). Seeded: the same arguments give the same floor on every machine.
    """
    if not 0 < k <= num_experts or num_tokens < 1 or trials < 1:
        raise ValueError(f"max_violation_noise_floor: expected num_tokens >= 1, 0 < k <= num_experts and "
                         f"trials >= 1, found num_tokens={num_tokens}, k={k}, num_experts={num_experts}, "
                         f"trials={trials}")
    mean, p95 = _noise_floor(int(num_tokens), int(num_experts), int(k), int(trials), int(seed))
    return {"mean": mean, "p95": p95}


@lru_cache(maxsize=256)
def _noise_floor(num_tokens: int, num_experts: int, k: int, trials: int, seed: int) -> tuple[float, float]:
    """(mean, p95) of the MaxVio of `trials` uniform routings; cached: every figure and column of one
    run asks for the same floor."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    chunk = max(1, 2_000_000 // (num_tokens * num_experts))  # trials per draw, a few MB at a time
    for start in range(0, trials, chunk):
        n = min(chunk, trials - start)
        picks = torch.rand(n, num_tokens, num_experts, generator=generator).topk(k, dim=-1).indices  # (n, N, k)
        for trial in picks:
            values.append(max_violation(expert_load(trial, num_experts)))
    values_t = torch.tensor(values)
    return float(values_t.mean()), float(values_t.quantile(0.95))


def load_noise_floor(load: torch.Tensor, k: int, trials: int = 200, seed: int = 0) -> dict[str, float]:
    """The noise floor of a measured (E,) load: max_violation_noise_floor for the N = sum(load) / k
    tokens it counts (each token fills k slots)."""
    total, E = int(load.sum()), load.numel()
    if total == 0 or total % k:
        raise ValueError(f"load_noise_floor: expected a load of N tokens x k = {k} slots, found {total} slots")
    return max_violation_noise_floor(total // k, E, k, trials, seed)


def format_max_violation(value: float, floor: dict[str, float]) -> str:
    """"0.27 (floor 0.09)": a MaxVio beside the 95th percentile of a uniformly random router's on the
    same number of tokens. Below the floor, a load is as balanced as that many tokens can show."""
    return f"{value:.2f} (floor {floor['p95']:.2f})"


def top_expert_share(selected: torch.Tensor, num_experts: int) -> tuple[int, float]:
    """The expert that most tokens of a set visit, and the share of those tokens that visit it.

    With uniform routing every expert is visited by a share k/E of the tokens.
    """
    load = expert_load(selected, num_experts)  # a token visits an expert at most once
    best = int(load.argmax())
    return best, float(load[best]) / selected.shape[0]


def coefficient_of_variation(load: torch.Tensor) -> float:
    """std / mean of the load (population std): 0 when balanced, sqrt(E - 1) when one expert takes all."""
    load = load.float()
    return float(load.std(correction=0) / load.mean())


def load_entropy(load: torch.Tensor) -> float:
    """Entropy of the load shares p = load / sum(load), divided by log E: 1 uniform, 0 one expert."""
    p = load.float() / load.sum()
    return float(-(p * p.clamp_min(1e-30).log()).sum() / math.log(len(p)))


def load_metrics(load: torch.Tensor) -> dict[str, float]:
    """The three balance numbers of one layer's (E,) load."""
    return {"max_violation": max_violation(load), "cv": coefficient_of_variation(load),
            "entropy": load_entropy(load)}


# -------------------------------------------------------------------------------------- per token
def router_entropy(scores: torch.Tensor) -> torch.Tensor:
    """(..., E) sigmoid scores -> (...) normalised entropy of p = s / sum(s), in [0, 1].

    1: the router scores every expert alike (no preference); near 0: one expert dominates.
    """
    p = scores.float() / scores.float().sum(-1, keepdim=True)  # (..., E)
    return -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(scores.shape[-1])


def selection_margin(selection_scores: torch.Tensor, k: int) -> torch.Tensor:
    """(..., E) selection scores -> (...) k-th minus (k+1)-th largest: 0 means a tie for the last seat."""
    E = selection_scores.shape[-1]
    if not 0 < k < E:
        raise ValueError(f"selection_margin: expected 0 < k < E = {E}, found k = {k}")
    top = torch.topk(selection_scores.float(), k + 1, dim=-1).values  # (..., k+1), descending
    return top[..., k - 1] - top[..., k]


def rerouted_without_bias(scores: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """(..., E) unbiased scores, (..., k) experts chosen with the bias -> (...) bool: True where the
    top-k of the unbiased scores is a different SET of experts (the order does not matter)."""
    k = selected.shape[-1]
    unbiased = torch.topk(scores, k, dim=-1).indices  # (..., k)
    return (unbiased.sort(-1).values != selected.sort(-1).values).any(-1)


def bias_override(scores: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """(..., E) unbiased scores, (..., k) experts chosen with the bias -> (...) >= 0: how much unbiased
    score the bias trades away at each token, sum(top-k of s) - sum(s of the chosen). 0 where the
    bias changes nothing; large where it overrides a clear preference of the router."""
    k = selected.shape[-1]
    best = torch.topk(scores.float(), k, dim=-1).values.sum(-1)  # (...,) what the router alone would take
    return (best - scores.float().gather(-1, selected.long()).sum(-1)).clamp_min(0)  # (...,)


def quantiles(values: torch.Tensor) -> dict[str, float]:
    """The spread of a per-token measure: mean, 10th percentile, median and 90th percentile."""
    v = values.detach().flatten().float().cpu()
    if v.numel() == 0:
        raise ValueError("quantiles: expected at least one value, found none")
    p10, p50, p90 = v.quantile(torch.tensor([0.1, 0.5, 0.9])).tolist()
    return {"mean": float(v.mean()), "p10": p10, "median": p50, "p90": p90}


# -------------------------------------------------------------------------------- specialisation
def _one_hot(selected: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(..., k) -> (N, E) float, 1 where a token visits an expert."""
    selected = selected.reshape(-1, selected.shape[-1]).long()
    hot = torch.zeros(selected.shape[0], num_experts)
    return hot.scatter_(1, selected, 1.0)


def domain_specialisation(selected_by_domain: dict[str, torch.Tensor], num_experts: int) -> dict[str, torch.Tensor]:
    """OLMoE's domain specialisation: domain -> (E,) share of the domain's tokens routed to each expert.

    Each row sums to k; uniform routing gives k/E everywhere.
    """
    out = {}
    for domain, selected in selected_by_domain.items():
        n = selected.reshape(-1, selected.shape[-1]).shape[0]
        out[domain] = expert_load(selected, num_experts).float() / n
    return out


def _mutual_information(counts: torch.Tensor) -> float:
    """I(row; column) in bits of a table of counts."""
    p = counts.double() / counts.sum()
    outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)  # what independence would give
    nz = p > 0
    return float((p[nz] * (p[nz] / outer[nz]).log2()).sum())


def domain_information(selected_by_domain: dict[str, torch.Tensor], num_experts: int) -> float:
    """I(expert; domain) in bits over all routed slots: how much the expert a slot went to tells
    about the domain of its token. 0 when every domain spreads over the experts alike (whatever the
    load); log2(D) when each domain has experts of its own (D domains of equal size). Unlike the
    largest specialisation, it does not grow when one expert simply takes more of every domain."""
    counts = torch.stack([expert_load(s, num_experts) for s in selected_by_domain.values()])  # (D, E)
    return _mutual_information(counts)


def vocabulary_specialisation(token_ids: torch.Tensor, selected: torch.Tensor, num_experts: int) -> dict[str, torch.Tensor]:
    """OLMoE's vocabulary specialisation, for each distinct token x of the input:
    N(x routed to expert i) / N(x).

    token_ids (...,) and selected (..., k) of the same tokens -> {"token_ids": (U,), "counts": (U,),
    "share": (U, E)}, U distinct tokens in increasing id order; each row of share sums to k.
    """
    ids = token_ids.reshape(-1).long()
    hot = _one_hot(selected, num_experts)  # (N, E)
    if hot.shape[0] != ids.shape[0]:
        raise ValueError(f"vocabulary_specialisation: expected one routing per token, found {ids.shape[0]} "
                         f"tokens and {hot.shape[0]} routings")
    unique, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    hits = torch.zeros(len(unique), num_experts).index_add_(0, inverse, hot)  # (U, E)
    return {"token_ids": unique, "counts": counts, "share": hits / counts[:, None]}


def vocabulary_consistency(vocabulary: dict[str, torch.Tensor], min_count: int = 1) -> float:
    """How much routing follows the token id alone: over all occurrences of the tokens seen at least
    min_count times, the mean share of a token's occurrences that visit its most visited expert.
    1: every occurrence of a token meets one same expert, whatever its context.
    vocabulary: what vocabulary_specialisation returns."""
    keep = vocabulary["counts"] >= min_count
    counts = vocabulary["counts"][keep].double()
    return float((vocabulary["share"][keep].max(-1).values.double() * counts).sum() / counts.sum())


def top_tokens(vocabulary: dict[str, torch.Tensor], min_count: int = 10, n: int = 5) -> dict[int, list[tuple[int, float, int]]]:
    """Which tokens go to which expert: for each expert, the n tokens (seen at least min_count
    times) that are routed to it most consistently, as (token id, share, count), best first.
    vocabulary: what vocabulary_specialisation returns."""
    keep = vocabulary["counts"] >= min_count
    share = vocabulary["share"].masked_fill(~keep[:, None], -1.0)  # (U, E): rare tokens last
    out = {}
    for e in range(share.shape[1]):
        order = share[:, e].argsort(descending=True, stable=True)[:n]
        out[e] = [(int(vocabulary["token_ids"][j]), float(vocabulary["share"][j, e]), int(vocabulary["counts"][j]))
                  for j in order.tolist() if keep[j]]
    return out


def coactivation(selected: torch.Tensor, num_experts: int) -> torch.Tensor:
    """OLMoE's co-activation: (E, E), entry [i, j] = N(tokens routed to i and j) / N(tokens routed to i).

    The diagonal is set to 0 (an expert always co-occurs with itself); rows of unused experts are 0.
    Each used expert's row sums to k - 1. Independent uniform routing gives (k - 1) / (E - 1).
    """
    hot = _one_hot(selected, num_experts)  # (N, E)
    both = hot.T @ hot  # (E, E): N(i and j), N(i) on the diagonal
    alone = both.diagonal().clone()  # (E,) N(i)
    share = both / alone.clamp_min(1)[:, None]
    share.fill_diagonal_(0.0)
    return share


def consecutive_share(selected: torch.Tensor) -> dict[str, float]:
    """Mixtral's temporal locality: over all pairs of neighbouring tokens (t, t+1) of each sequence,
    the share whose first-choice experts are the same ("first") and whose k experts overlap ("any").

    selected: (T, k) for one sequence or (B, T, k) for B sequences (pairs never cross sequences).
    """
    if selected.dim() == 2:
        selected = selected[None]
    if selected.shape[1] < 2:
        raise ValueError(f"consecutive_share: expected sequences of at least 2 tokens, found {selected.shape[1]}")
    now, nxt = selected[:, :-1], selected[:, 1:]  # (B, T-1, k) each
    first = (now[..., 0] == nxt[..., 0]).float().mean()
    overlap = (now[..., :, None] == nxt[..., None, :]).any(-1).any(-1).float().mean()  # any shared expert
    return {"first": float(first), "any": float(overlap)}


def consecutive_baseline(num_experts: int, k: int) -> dict[str, float]:
    """consecutive_share for independent, uniform routing: 1/E and 1 - C(E-k, k) / C(E, k)."""
    return {"first": 1 / num_experts, "any": 1 - math.comb(num_experts - k, k) / math.comb(num_experts, k)}


# ------------------------------------------------------------------------------ training logs
def _by_layer(d: dict) -> dict[int, list]:
    """A TrainLog's {layer: values}, whose keys are strings once read back from JSON."""
    return {int(i): v for i, v in d.items()}


def log_balance(log: dict) -> dict:
    """A TrainLog (as a dict, or read from training_log.json) -> {"steps": [...], "max_violation":
    {layer: [...]}, "cv": {layer: [...]}}: the balance of each MoE layer at every logged step."""
    loads = [_by_layer(entry) for entry in log["load"]]
    layers = sorted(loads[0]) if loads else []
    out = {"steps": list(log["steps"]), "max_violation": {i: [] for i in layers}, "cv": {i: [] for i in layers},
           "noise_floor": None}  # the MaxVio of a uniform router on one logged batch
    if layers and "config" in log:
        out["noise_floor"] = load_noise_floor(torch.tensor(loads[0][layers[0]]), _log_top_k(log))
    for entry in loads:
        for i in layers:
            load = torch.tensor(entry[i])
            out["max_violation"][i].append(max_violation(load))
            out["cv"][i].append(coefficient_of_variation(load))
    return out


def _log_top_k(log: dict) -> int:
    """k of a TrainLog: slots per token = sum(load) / (batch_size * seq_len)."""
    cfg, first = log["config"], next(iter(log["load"][0].values()))
    return round(sum(first) / (cfg["batch_size"] * cfg["seq_len"]))


def log_table(log: dict, key: str, step: int = -1) -> tuple[list[int], torch.Tensor]:
    """(MoE layers, (L, E) tensor) of a TrainLog's `load` or `expert_bias` at one logged step."""
    entry = _by_layer(log[key][step])
    layers = sorted(entry)
    return layers, torch.tensor([entry[i] for i in layers], dtype=torch.float32).reshape(len(layers), -1)


# ---------------------------------------------------------------------------- from a model run
def moe_layers(config) -> list[int]:
    """The MoE layers of a config (config.moe_layers; kept for the chapters that call it)."""
    return config.moe_layers


@dataclass
class RouteTable:
    """Which experts each token was sent to, at each MoE layer, and why (the router's scores)."""

    token_ids: list[int]
    tokens: list[str]  # each token's text, whitespace made visible
    layers: list[int]  # the MoE layers, in order
    experts: list[list[list[int]]]  # [token][layer position] -> the k chosen experts, by selection score
    weights: list[list[list[float]]]  # same shape: their mixing weights
    num_experts: int
    scores: list[list[list[float]]]  # [token][layer position] -> the E sigmoid scores
    selection_scores: list[list[list[float]]]  # same shape: scores + expert_bias (what chose)
    expert_bias: list[list[float] | None]  # [layer position] -> the E biases, None without one
    dense_layers: list[int]  # the layers with a dense MLP (no router)

    def layer(self, i: int) -> dict[str, torch.Tensor | None]:
        """MoE layer i as tensors: scores, selection_scores (T, E), selected, weights (T, k), expert_bias (E,)."""
        if i not in self.layers:
            raise ValueError(f"route table: expected one of the MoE layers {self.layers}, found {i}")
        j = self.layers.index(i)
        bias = self.expert_bias[j]
        return {"scores": torch.tensor([row[j] for row in self.scores]),
                "selection_scores": torch.tensor([row[j] for row in self.selection_scores]),
                "selected": torch.tensor([row[j] for row in self.experts]),
                "weights": torch.tensor([row[j] for row in self.weights]),
                "expert_bias": None if bias is None else torch.tensor(bias)}


@torch.no_grad()
def route_tokens(model, tokenizer, token_ids: list[int], layers: list[int] | None = None) -> RouteTable:
    """Run the tokens once and read the router's decisions at the MoE layers (all by default)."""
    cfg = model.config
    moe = moe_layers(cfg)
    if not moe:
        raise ValueError(f"route: expected a model with MoE layers, found model_type '{cfg.model_type}' "
                         f"with none (a dense model has no router to show)")
    layers = moe if layers is None else list(layers)
    if not layers or any(i not in moe for i in layers):
        raise ValueError(f"route: expected MoE layers among {moe}, found {layers}")
    if not token_ids:
        raise ValueError("route: expected at least one token, found an empty text")
    capture = Capture(*(f"layers.{i}.moe.{name}" for i in layers
                        for name in ("scores", "selection_scores", "selected", "weights")))
    model(torch.tensor([token_ids], device=model.device), capture=capture)

    def per_token(name: str) -> list:  # [token][layer position][...]
        per_layer = [capture[f"layers.{i}.moe.{name}"][0].float().tolist() for i in layers]
        return [[per_layer[j][t] for j in range(len(layers))] for t in range(len(token_ids))]

    biases = [model.layers[i].feed_forward.expert_bias for i in layers]
    return RouteTable(
        token_ids=list(token_ids),
        tokens=tokenizer.tokens(token_ids, visible_whitespace=True),
        layers=layers,
        experts=[[[int(e) for e in experts] for experts in row] for row in per_token("selected")],
        weights=per_token("weights"),
        num_experts=cfg.num_experts,
        scores=per_token("scores"),
        selection_scores=per_token("selection_scores"),
        expert_bias=[None if b is None else b.float().tolist() for b in biases],
        dense_layers=cfg.dense_layers,
    )


@torch.no_grad()
def collect_routing(model, sequences: torch.Tensor, batch_size: int = 4,
                    names: tuple[str, ...] = ("selected",)) -> dict[int, dict[str, torch.Tensor]]:
    """Route (N, T) token sequences in batches -> {MoE layer: {name: (N, T, ...) tensor on the CPU}},
    names among the capture points of moe.py (selected, weights, scores, selection_scores, router_logits).
    Batches keep the memory of the (B, T, V) logits small on large vocabularies."""
    layers = moe_layers(model.config)
    parts: dict[int, dict[str, list]] = {i: {n: [] for n in names} for i in layers}
    for start in range(0, sequences.shape[0], batch_size):
        cap = Capture(*(f"layers.{i}.moe.{n}" for i in layers for n in names))
        model(sequences[start:start + batch_size].to(model.device), capture=cap)
        for i in layers:
            for n in names:
                parts[i][n].append(cap[f"layers.{i}.moe.{n}"].cpu())
    return {i: {n: torch.cat(v) for n, v in d.items()} for i, d in parts.items()}


@contextmanager
def expert_bias_zeroed(model, layers: list[int] | None = None):
    """Inside the block, expert_bias is 0 in `layers` (default: every MoE layer); afterwards the
    biases are back, whatever happened. Layers without a bias are left as they are."""
    moe = moe_layers(model.config)
    layers = moe if layers is None else list(layers)
    if any(i not in moe for i in layers):
        raise ValueError(f"expert_bias_zeroed: expected MoE layers among {moe}, found {layers}")
    saved = {i: model.layers[i].feed_forward.expert_bias for i in layers}
    try:
        for i, bias in saved.items():
            if bias is not None:
                model.layers[i].feed_forward.expert_bias = torch.zeros_like(bias)
        yield model
    finally:
        for i, bias in saved.items():
            model.layers[i].feed_forward.expert_bias = bias


@torch.no_grad()
def intervention_effect(model, sequences: torch.Tensor, intervention, batch_size: int = 4) -> dict:
    """Run (N, T) token sequences as they are, then inside `intervention()` (a function that returns
    a context manager changing the routing, e.g. `lambda: expert_bias_zeroed(model)`), and compare:

    -> {"rerouted": {MoE layer: (N, T) bool, the token's set of experts differs from the plain run},
        "kl": (N, T) KL(p plain || p changed) of the next-token distributions, in nats,
        "top1_changed": (N, T) bool, the most likely next token changed}
    """
    moe = model.config.moe_layers
    patterns = [f"layers.{i}.moe.selected" for i in moe]
    out = {"rerouted": {i: [] for i in moe}, "kl": [], "top1_changed": []}
    for start in range(0, sequences.shape[0], batch_size):
        ids = sequences[start:start + batch_size].to(model.device)  # (b, T)
        runs = []
        for changed in (False, True):
            cap = Capture(*patterns)
            if changed:
                with intervention():
                    logits = model(ids, capture=cap).logits.float()  # (b, T, V)
            else:
                logits = model(ids, capture=cap).logits.float()
            runs.append((logits, {i: cap[f"layers.{i}.moe.selected"].sort(-1).values for i in moe}))  # sets
        (plain, sets), (changed_logits, changed_sets) = runs
        logp, logq = plain.log_softmax(-1), changed_logits.log_softmax(-1)  # (b, T, V)
        out["kl"].append((logp.exp() * (logp - logq)).sum(-1).clamp_min(0).cpu())  # (b, T)
        out["top1_changed"].append((plain.argmax(-1) != changed_logits.argmax(-1)).cpu())  # (b, T)
        for i in moe:
            out["rerouted"][i].append((sets[i] != changed_sets[i]).any(-1).cpu())  # (b, T)
    return {"rerouted": {i: torch.cat(v) for i, v in out["rerouted"].items()},
            "kl": torch.cat(out["kl"]), "top1_changed": torch.cat(out["top1_changed"])}


@torch.no_grad()
def bias_ablation(model, token_ids: list[int], layers: list[int] | None = None) -> dict:
    """Run the tokens with and without expert_bias in `layers` (default: every MoE layer).

    -> {"zeroed": the layers whose bias was set to 0, "has_bias": False if the model has none,
        "rerouted": {MoE layer: (T,) bool, its set of experts changed (downstream layers see a
                    changed input, so they can change too)},
        "kl": (T,) KL(p with bias || p without) of the next-token distributions, in nats,
        "top1_changed": (T,) bool, the most likely next token changed}
    The biases are restored afterwards, whatever happens.
    """
    moe = model.config.moe_layers
    zeroed = moe if layers is None else list(layers)
    if any(i not in moe for i in zeroed):
        raise ValueError(f"bias_ablation: expected MoE layers among {moe}, found {zeroed}")
    effect = intervention_effect(model, torch.tensor([token_ids]), lambda: expert_bias_zeroed(model, zeroed))
    return {"zeroed": zeroed,
            "has_bias": any(model.layers[i].feed_forward.expert_bias is not None for i in zeroed),
            "rerouted": {i: r[0] for i, r in effect["rerouted"].items()},
            "kl": effect["kl"][0], "top1_changed": effect["top1_changed"][0]}


REROUTING_MODES = ("swap_one", "random_set")


def _reroute(block, r, share: float, mode: str, generator: torch.Generator):
    """A Routing with round(share * N) of its N tokens, drawn at random, sent to other experts:
    swap_one: the last of the k seats (the chosen expert with the lowest selection score) goes to a
              random expert outside the set, as zeroing the bias mostly swaps that seat;
    random_set: k distinct random experts, a set other than the chosen one.
    The weights of those tokens are recomputed from their unbiased scores (moe.mixing_weights)."""
    N, k = r.selected.shape
    E = r.scores.shape[-1]
    n = round(share * N)
    if n == 0:
        return r
    rows = torch.randperm(N, generator=generator)[:n].to(r.selected.device)  # (n,) the tokens to move
    old = r.selected[rows].cpu()  # (n, k)
    if mode == "swap_one":
        taken = torch.zeros(n, E, dtype=torch.bool).scatter_(1, old, True)  # (n, E) the chosen set
        draw = torch.rand(n, E, generator=generator).masked_fill(taken, -1.0)  # (n, E): chosen ones never win
        new = old.clone()
        new[:, k - 1] = draw.argmax(-1)  # (n,) a random expert outside the set
    else:
        new = torch.rand(n, E, generator=generator).topk(k, dim=-1).indices  # (n, k) k distinct experts
        same = (new.sort(-1).values == old.sort(-1).values).all(-1)  # (n,) drew the old set: draw again
        while same.any():
            new[same] = torch.rand(int(same.sum()), E, generator=generator).topk(k, dim=-1).indices
            same = (new.sort(-1).values == old.sort(-1).values).all(-1)
    selected, weights = r.selected.clone(), r.weights.clone()
    selected[rows] = new.to(selected.device)
    weights[rows] = mixing_weights(r.scores[rows], selected[rows], block.norm_topk_prob,
                                   block.routed_scaling_factor)  # (n, k)
    return Routing(r.logits, r.scores, r.selection_scores, selected, weights)


@contextmanager
def random_rerouting(model, share: float | dict[int, float], seed: int | torch.Generator = 0,
                     mode: str = "swap_one", layers: list[int] | None = None):
    """Inside the block, every call of the router in `layers` (default: every MoE layer) sends
    round(share * N) of its N tokens, drawn at random, to other experts (see _reroute for the
    modes). share: one number for every layer, or {layer: share}; seed: a seed, or a generator
    whose draws go on from one block to the next (the batches of one experiment).
    The control for zeroing the bias: as many tokens re-routed, but to random experts. The routers
    are restored afterwards, whatever happened; the model's weights are never touched.

    The blocks' own `route` is wrapped (an attribute on each block shadows the method), so the
    forward pass, the capture points and the cache run unchanged around it."""
    moe = model.config.moe_layers
    layers = moe if layers is None else list(layers)
    if any(i not in moe for i in layers):
        raise ValueError(f"random_rerouting: expected MoE layers among {moe}, found {layers}")
    if mode not in REROUTING_MODES:
        raise ValueError(f"random_rerouting: expected mode in {REROUTING_MODES}, found {mode!r}")
    shares = share if isinstance(share, dict) else {i: share for i in layers}
    if any(i not in shares for i in layers) or not all(0.0 <= shares[i] <= 1.0 for i in layers):
        raise ValueError(f"random_rerouting: expected a share in [0, 1] for each of the layers {layers}, found {share}")
    if model.config.num_experts <= model.config.num_experts_per_tok and any(shares[i] > 0 for i in layers):
        raise ValueError(f"random_rerouting: with k = E = {model.config.num_experts} there is no other expert to "
                         f"send a token to")
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    blocks = {i: model.layers[i].feed_forward for i in layers}
    own = {i: block.__dict__.get("route") for i, block in blocks.items()}  # a wrapper already there, if nested
    try:
        for i, block in blocks.items():
            def route(x, block=block, inner=block.route, share=shares[i]):
                return _reroute(block, inner(x), share, mode, generator)
            block.route = route
        yield model
    finally:
        for i, block in blocks.items():
            if own[i] is None:
                block.__dict__.pop("route", None)  # the class's method again
            else:
                block.route = own[i]


def _effect_summary(effect: dict) -> dict:
    return {"rerouted": {i: float(r.float().mean()) for i, r in effect["rerouted"].items()},
            "kl_mean": float(effect["kl"].mean()), "kl_median": float(effect["kl"].median()),
            "top1_changed": float(effect["top1_changed"].float().mean())}


@torch.no_grad()
def rerouting_control(model, sequences: torch.Tensor, seeds: tuple[int, ...] = (0, 1, 2), mode: str = "swap_one",
                      batch_size: int = 4) -> dict:
    """Does the bias's re-routing matter more or less than re-routing as many tokens at random?

    On (N, T) sequences: the direct share of each MoE layer (its tokens whose top-k changes when
    only that layer's bias is dropped, on the plain run's inputs: rerouted_without_bias) is re-routed
    at random (random_rerouting, one run per seed), and compared with zeroing every bias. Both runs
    also re-route tokens downstream of a change, so their measured re-routed shares are given too.

    -> {"share": {layer: direct share}, "mode": mode, "tokens": N * T,
        "bias_zeroed": {"rerouted": {layer: share}, "kl_mean", "kl_median", "top1_changed", "effect": raw},
        "random": [the same for each seed, with "seed"]}   (raw: what intervention_effect returns)
    """
    if not model.config.moe_layers:
        raise ValueError(f"rerouting_control: expected a model with MoE layers, found model_type "
                         f"'{model.config.model_type}' with none")
    if sequences.dim() != 2:
        raise ValueError(f"rerouting_control: expected (N, T) token sequences, found shape {tuple(sequences.shape)}")
    plain = collect_routing(model, sequences, batch_size, names=("selected", "scores"))
    share = {i: float(rerouted_without_bias(r["scores"], r["selected"]).float().mean()) for i, r in plain.items()}
    bias = intervention_effect(model, sequences, lambda: expert_bias_zeroed(model), batch_size)
    out = {"share": share, "mode": mode, "tokens": sequences.numel(),
           "bias_zeroed": {**_effect_summary(bias), "effect": bias}, "random": []}
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)  # one stream of draws over all batches
        effect = intervention_effect(model, sequences, lambda: random_rerouting(model, share, generator, mode),
                                     batch_size)
        out["random"].append({"seed": seed, **_effect_summary(effect), "effect": effect})
    return out


# ---------------------------------------------------------------------- held-out routing, whole
from .tiny.heldout import FILE_NAME as HELD_OUT_FILE  # beside a checkpoint's weights: {domain: (N, T+1)}


def _check_windows(windows: dict, vocab_size: int, drop_first: bool) -> None:
    if not isinstance(windows, dict) or not windows:
        raise ValueError(f"windows: expected {{domain: (N, T+1) token tensor}}, found {type(windows).__name__} "
                         f"{'(empty)' if isinstance(windows, dict) else ''}")
    need = 3 if drop_first else 2  # two tokens left to pair as neighbours
    for d, w in windows.items():
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.dtype.is_floating_point or w.dtype == torch.bool:
            raise ValueError(f"windows[{d!r}]: expected a 2-D tensor of token ids, found "
                             f"{type(w).__name__ if not isinstance(w, torch.Tensor) else f'{w.dtype} of shape {tuple(w.shape)}'}")
        if w.shape[0] < 1 or w.shape[1] < need:
            raise ValueError(f"windows[{d!r}]: expected at least 1 window of {need} tokens, found shape {tuple(w.shape)}")
        if int(w.min()) < 0 or int(w.max()) >= vocab_size:
            raise ValueError(f"windows[{d!r}]: expected token ids in [0, {vocab_size}), found {int(w.min())}..{int(w.max())}")


def route_windows(model, windows: dict[str, torch.Tensor], drop_first: bool = True, batch_size: int = 4,
                  names: tuple[str, ...] = ("selected", "scores", "selection_scores")) -> tuple[dict, dict]:
    """Route {domain: (N, T+1)} windows -> (token_ids {domain: (N, T)}, {domain: {MoE layer: {name:
    (N, T, ...)}}}). drop_first drops position 0 from both: windows lead with bos, the same token
    in every window, which would otherwise count as N identical tokens."""
    _check_windows(windows, model.config.vocab_size, drop_first)
    cut = 1 if drop_first else 0
    ids, routed = {}, {}
    for d, w in windows.items():
        r = collect_routing(model, w.long(), batch_size, names)  # {layer: {name: (N, T+1, ...)}}
        ids[d] = w[:, cut:].long()  # (N, T)
        routed[d] = {i: {n: t[:, cut:] for n, t in per.items()} for i, per in r.items()}
    return ids, routed


@torch.no_grad()
def held_out_analysis(model, windows: dict[str, torch.Tensor], drop_first: bool = True, min_count: int = 10,
                      batch_size: int = 4) -> dict:
    """Every routing metric of this module, per MoE layer, on held-out {domain: (N, T+1)} windows.

    -> {"domains", "tokens": {domain: n}, "num_experts", "k", "layers",
        "noise_floor": MaxVio of a uniform router on all the tokens {"mean", "p95"},
        "consecutive_baseline", "coactivation_baseline": (k-1)/(E-1),
        "per_layer": {layer: {"load" (E,), "max_violation", "cv", "entropy",
                              "domain_specialisation" {domain: (E,)}, "top_specialisation" {domain, expert,
                              share, ratio (to k/E)}, "domain_information" (bits), "vocabulary_consistency"
                              (tokens seen >= min_count times), "coactivation" (E, E), "top_coactivation"
                              {pair, share, ratio (to uniform)}, "consecutive" {first, any},
                              "rerouted_without_bias" (share), "margin" and "bias_override" (quantiles)}},
        "token_ids": {domain: (N, T)}, "selected": {domain: {layer: (N, T, k)}}}
    Sequences of one domain must share T; domains may differ."""
    cfg = model.config
    if not cfg.moe_layers:
        raise ValueError(f"held_out_analysis: expected a model with MoE layers, found model_type "
                         f"'{cfg.model_type}' with none")
    E, k = cfg.num_experts, cfg.num_experts_per_tok
    ids, routed = route_windows(model, windows, drop_first, batch_size)
    domains = list(ids)
    n_tokens = {d: ids[d].numel() for d in domains}
    all_ids = torch.cat([ids[d].reshape(-1) for d in domains])  # (N,)
    pairs = {d: ids[d].shape[0] * (ids[d].shape[1] - 1) for d in domains}  # neighbouring pairs per domain
    co_base = (k - 1) / (E - 1) if E > 1 else 0.0
    per_layer = {}
    for i in cfg.moe_layers:
        sel = {d: routed[d][i]["selected"] for d in domains}  # (N_d, T_d, k) each
        flat = torch.cat([sel[d].reshape(-1, k) for d in domains])  # (N, k), in the order of all_ids
        scores = torch.cat([routed[d][i]["scores"].reshape(-1, E) for d in domains]).float()  # (N, E)
        selection = torch.cat([routed[d][i]["selection_scores"].reshape(-1, E) for d in domains]).float()  # (N, E)
        load = expert_load(flat, E)
        spec = domain_specialisation(sel, E)
        best_d, best_e = max(((d, e) for d in domains for e in range(E)), key=lambda de: float(spec[de[0]][de[1]]))
        coact = coactivation(flat, E)
        a, b = divmod(int(coact.argmax()), E)
        near = {d: consecutive_share(sel[d]) for d in domains}
        per_layer[i] = {
            "load": load, **load_metrics(load),
            "domain_specialisation": spec,
            "top_specialisation": {"domain": best_d, "expert": best_e, "share": float(spec[best_d][best_e]),
                                   "ratio": float(spec[best_d][best_e]) / (k / E)},
            "domain_information": domain_information(sel, E),
            "vocabulary_consistency": vocabulary_consistency(vocabulary_specialisation(all_ids, flat, E), min_count),
            "coactivation": coact,
            "top_coactivation": {"pair": (a, b), "share": float(coact[a, b]),
                                 "ratio": float(coact[a, b]) / co_base if co_base else float("nan")},
            "consecutive": {key: sum(near[d][key] * pairs[d] for d in domains) / sum(pairs.values())
                            for key in ("first", "any")},
            "rerouted_without_bias": float(rerouted_without_bias(scores, flat).float().mean()),
            "margin": quantiles(selection_margin(selection, k)) if k < E else None,
            "bias_override": quantiles(bias_override(scores, flat)),
        }
    return {"domains": domains, "tokens": n_tokens, "num_experts": E, "k": k, "layers": cfg.moe_layers,
            "noise_floor": max_violation_noise_floor(sum(n_tokens.values()), E, k),
            "consecutive_baseline": consecutive_baseline(E, k), "coactivation_baseline": co_base,
            "per_layer": per_layer, "token_ids": ids,
            "selected": {d: {i: routed[d][i]["selected"] for i in cfg.moe_layers} for d in domains}}


def untrained_twin(model, seed: int = 0):
    """The model's architecture with the weights training starts from (train.init_weights: N(0, 0.02)
    matrices, unit norms, zero expert_bias), seeded, in fp32 on the model's device. The global
    random state is left as it was."""
    from .model import LFM2Model
    from .train import init_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = init_weights(LFM2Model(model.config))
    return twin.to(model.device).eval()


def compare_routing(model, windows: dict[str, torch.Tensor], untrained: bool = True, seed: int = 0,
                    **analysis_options) -> dict[str, dict]:
    """held_out_analysis of the model ("trained"), of the model with its expert_bias zeroed ("trained,
    bias zeroed"; left out when it has no bias) and of its untrained twin of the same shape
    ("untrained"; untrained=False leaves it out: it needs the fp32 memory of the whole model)."""
    out = {"trained": held_out_analysis(model, windows, **analysis_options)}
    if any(model.layers[i].feed_forward.expert_bias is not None for i in model.config.moe_layers):
        with expert_bias_zeroed(model):
            out["trained, bias zeroed"] = held_out_analysis(model, windows, **analysis_options)
    if untrained:
        out["untrained"] = held_out_analysis(untrained_twin(model, seed), windows, **analysis_options)
    return out


# metric -> (where it comes from, its value in one layer's analysis, its baseline in the analysis or None)
SUMMARY_METRICS = {
    "MaxVio": ("Wang et al. 2024, Loss-Free Balancing; baseline: the noise floor, p95",
               lambda layer: layer["max_violation"], lambda a: a["noise_floor"]["p95"]),
    "I(expert; domain), bits": ("domain information (this course), over OLMoE's domain counts",
                                lambda layer: layer["domain_information"], lambda a: 0.0),
    "top domain share / (k/E)": ("OLMoE sec. 5, domain specialisation",
                                 lambda layer: layer["top_specialisation"]["ratio"], lambda a: 1.0),
    "token-id consistency": ("OLMoE sec. 5, vocabulary specialisation (compare untrained)",
                             lambda layer: layer["vocabulary_consistency"], lambda a: None),
    "top co-activation / uniform": ("OLMoE sec. 5, co-activation",
                                    lambda layer: layer["top_coactivation"]["ratio"], lambda a: 1.0),
    "same first choice, neighbours": ("Mixtral sec. 5", lambda layer: layer["consecutive"]["first"],
                                      lambda a: a["consecutive_baseline"]["first"]),
    "any expert shared, neighbours": ("Mixtral sec. 5", lambda layer: layer["consecutive"]["any"],
                                      lambda a: a["consecutive_baseline"]["any"]),
    "re-routed without the bias": ("share of tokens whose top-k changes when expert_bias is dropped",
                                   lambda layer: layer["rerouted_without_bias"], lambda a: None),
    "median margin": ("k-th minus (k+1)-th selection score (this course)",
                      lambda layer: layer["margin"]["median"] if layer["margin"] else float("nan"), lambda a: None),
}


def summary_table(analyses: dict[str, dict]) -> dict:
    """One number per metric, MoE layer and model from held_out_analysis results (compare_routing's)
    -> {"layers", "tokens", "metrics", "sources", "values": {model: {metric: [per layer]}},
        "baselines": {metric: number or None}}; values and baselines are what
    viz.routing.plot_model_comparison draws."""
    if not analyses:
        raise ValueError("summary_table: expected at least one analysis, found none")
    first = next(iter(analyses.values()))
    for name, a in analyses.items():
        if a["layers"] != first["layers"] or a["tokens"] != first["tokens"]:
            raise ValueError(f"summary_table: expected analyses of the same layers and windows, found "
                             f"{name!r} with layers {a['layers']} and tokens {a['tokens']}, not {first['layers']} "
                             f"and {first['tokens']}")
    return {"layers": list(first["layers"]), "tokens": sum(first["tokens"].values()), "metrics": list(SUMMARY_METRICS),
            "sources": {m: src for m, (src, _, _) in SUMMARY_METRICS.items()},
            "values": {name: {m: [get(a["per_layer"][i]) for i in a["layers"]]
                              for m, (_, get, _) in SUMMARY_METRICS.items()} for name, a in analyses.items()},
            "baselines": {m: base(first) for m, (_, _, base) in SUMMARY_METRICS.items()}}


def format_summary_table(table: dict) -> str:
    """summary_table as text: a block per metric, a row per model and one for the baseline, a column per layer."""
    width = max(28, *(len(name) + 2 for name in table["values"]))
    lines = [" " * width + "".join(f"L{i}".rjust(8) for i in table["layers"])]
    for m in table["metrics"]:
        lines.append(f"{m}  ({table['sources'][m]})")
        for name, values in table["values"].items():
            lines.append(f"  {name}".ljust(width) + "".join(f"{v:8.3f}" for v in values[m]))
        if table["baselines"][m] is not None:
            label = "  noise floor (p95)" if m == "MaxVio" else "  uniform random routing"
            lines.append(label.ljust(width) + f"{table['baselines'][m]:8.3f}" * len(table["layers"]))
    return "\n".join(lines)


def load_held_out(folder) -> dict[str, torch.Tensor] | None:
    """The held-out windows a checkpoint ships ({domain: (N, T+1)} in HELD_OUT_FILE), or None."""
    from pathlib import Path

    from safetensors.torch import load_file

    from .tiny.corpus import DOMAINS

    path = Path(folder) / HELD_OUT_FILE
    if not path.is_file():
        return None
    windows = load_file(str(path))
    for d, w in windows.items():
        if w.dim() != 2 or w.dtype.is_floating_point:
            raise ValueError(f"{path.name}: expected (N, T+1) token ids per domain, found {d!r}: {w.dtype} "
                             f"of shape {tuple(w.shape)}")
    order = sorted(windows, key=lambda d: (DOMAINS.index(d) if d in DOMAINS else len(DOMAINS), d))
    return {d: windows[d].long() for d in order}


def text_windows(tokenizer, texts: dict[str, str], seq_len: int = 128, max_windows: int = 8) -> dict[str, torch.Tensor]:
    """{domain: text} -> {domain: (N, T+1)} consecutive windows of T = seq_len tokens, each led by bos."""
    from .tiny.data import validation_windows

    out = {}
    for d, text in texts.items():
        ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)  # (n,)
        if len(ids) < seq_len + 1:
            raise ValueError(f"text {d!r}: expected at least {seq_len + 1} tokens for one window of {seq_len}, "
                             f"found {len(ids)} (give more text or a smaller seq_len)")
        out[d] = validation_windows(ids, seq_len, max_windows)  # (N, T+1)
    return out


def corpus_windows(tokenizer, seq_len: int = 128, max_windows: int = 8) -> dict[str, torch.Tensor]:
    """{domain: (N, T+1)} windows of the held-out documents of the shipped model's corpus, rebuilt
    offline (lfm2_edu.tiny.corpus: about a minute), as chapter 11 routes them."""
    from .tiny.corpus import EOT, build_corpus
    from .tiny.data import token_stream, validation_windows

    if tokenizer.token_to_id(EOT) is None:
        raise ValueError(f"corpus_windows: expected a tokenizer with {EOT} (it separates documents), found none")
    corpus = build_corpus(seed=0)
    return {d: validation_windows(token_stream(tokenizer.backend, docs), seq_len, max_windows)
            for d, docs in corpus.valid.items()}


def held_out_windows(folder, tokenizer, seq_len: int = 128, max_windows: int = 8) -> tuple[dict, str]:
    """(windows, where they come from): those the checkpoint ships; else, for a checkpoint with the
    shipped models' tokenizer, their shipped held-out set; else the corpus's held-out split."""
    from pathlib import Path

    from .tiny import heldout

    own = load_held_out(folder)
    if own is not None:
        return own, f"{HELD_OUT_FILE}, shipped with the checkpoint"
    if heldout.tokenizer_matches(Path(folder) / "tokenizer.json"):
        return heldout.load_heldout(Path(folder) / "tokenizer.json"), "the shipped models' held-out set"
    return corpus_windows(tokenizer, seq_len, max_windows), "the held-out split of lfm2_edu's corpus, rebuilt offline"


# ------------------------------------------------------------------------ chapter 10's balancing toy
def simulate_balancing(num_experts: int = 8, k: int = 2, tokens: int = 256, steps: int = 200, rate: float = 0.01,
                       skew: float = 1.0, noise: float = 1.0, seed: int = 0) -> dict:
    """Loss-Free Balancing (Wang et al. 2024) on a router without a model. Each expert has a fixed
    preference (logit offset ~ skew * N(0, 1): some experts are liked whatever the token); each
    token adds its own N(0, noise^2) logits. Every step routes a fresh batch of `tokens` tokens by
    top-k of sigmoid(logits) + bias, then applies the bias update (train.bias_step) with rate u.

    -> {"steps", "load": (steps, E) per step, "bias": (steps, E) in effect at each step,
        "max_violation": [per step], "noise_floor": of `tokens` tokens, "ceiling": E/k - 1,
        "preference": (E,), "settings": the arguments}
    skew = 0 is a fair router: its MaxVio sits at the noise floor; rate = 0 never moves the bias."""
    from .train import bias_step

    if not 0 < k < num_experts or tokens < 1 or steps < 1 or rate < 0 or skew < 0 or noise < 0:
        raise ValueError(f"simulate_balancing: expected 0 < k < num_experts, tokens >= 1, steps >= 1 and rate, skew, "
                         f"noise >= 0, found num_experts={num_experts}, k={k}, tokens={tokens}, steps={steps}, "
                         f"rate={rate}, skew={skew}, noise={noise}")
    E = num_experts
    g = torch.Generator().manual_seed(seed)
    preference = skew * torch.randn(E, generator=g)  # (E,)
    bias = torch.zeros(E)
    loads, biases = [], []
    for _ in range(steps):
        logits = preference + noise * torch.randn(tokens, E, generator=g)  # (tokens, E)
        selected = torch.topk(torch.sigmoid(logits) + bias, k, dim=-1).indices  # (tokens, k): the bias chooses
        load = expert_load(selected, E)  # (E,)
        loads.append(load)
        biases.append(bias)
        bias = bias_step(bias, load, rate)  # b_i += u * sign(mean load - load_i)
    return {"steps": list(range(steps)), "load": torch.stack(loads), "bias": torch.stack(biases),  # (steps, E) each
            "max_violation": [max_violation(load) for load in loads],
            "noise_floor": max_violation_noise_floor(tokens, E, k), "ceiling": E / k - 1, "preference": preference,
            "settings": {"num_experts": E, "k": k, "tokens": tokens, "steps": steps, "rate": rate, "skew": skew,
                         "noise": noise, "seed": seed}}


# ------------------------------------------------------------------------ chapter 11's expert browser
def expert_profile(token_ids: dict[str, torch.Tensor], selected: dict[str, torch.Tensor], expert: int,
                   num_experts: int, min_count: int = 5, n_tokens: int = 8, n_contexts: int = 6, width: int = 6,
                   seed: int = 0) -> dict:
    """One expert of one layer, on routed windows: token_ids {domain: (N, T)}, selected {domain:
    (N, T, k)} (held_out_analysis's "token_ids" and "selected"[domain][layer]).

    -> {"expert", "tokens", "visits", "load_share" (share of all tokens that visit it), "uniform": k/E,
        "domain_share" {domain: share of the domain's tokens that visit it (OLMoE's domain
        specialisation)}, "domain_mix" {domain: share of its visitors from the domain},
        "first_choice_share" (of its visitors, those that rank it first),
        "top_tokens" [(id, share, count)] (top_tokens, seen >= min_count times),
        "contexts" [{"domain", "window", "position", "before", "token", "after", "experts"}]
        (a seeded random sample of its visitors, `width` tokens either side, in text order)}"""
    if not 0 <= expert < num_experts:
        raise ValueError(f"expert_profile: expected an expert in [0, {num_experts}), found {expert}")
    if set(token_ids) != set(selected):
        raise ValueError(f"expert_profile: expected the same domains, found {list(token_ids)} and {list(selected)}")
    domains = list(token_ids)
    k = selected[domains[0]].shape[-1]
    visits = {d: (selected[d] == expert).any(-1) for d in domains}  # (N, T) bool each
    n = {d: token_ids[d].numel() for d in domains}
    hits = {d: int(visits[d].sum()) for d in domains}
    total = sum(hits.values())
    first = sum(int((selected[d][..., 0] == expert).sum()) for d in domains)
    vocab = vocabulary_specialisation(torch.cat([token_ids[d].reshape(-1) for d in domains]),
                                      torch.cat([selected[d].reshape(-1, k) for d in domains]), num_experts)
    where = [(d, b, t) for d in domains for b, t in visits[d].nonzero().tolist()]
    pick = torch.randperm(len(where), generator=torch.Generator().manual_seed(seed))[:n_contexts].sort().values
    contexts = []
    for d, b, t in (where[j] for j in pick.tolist()):
        row = token_ids[d][b]
        contexts.append({"domain": d, "window": b, "position": t, "before": row[max(0, t - width):t].tolist(),
                         "token": int(row[t]), "after": row[t + 1:t + 1 + width].tolist(),
                         "experts": selected[d][b, t].tolist()})
    return {"expert": expert, "tokens": sum(n.values()), "visits": total, "load_share": total / sum(n.values()),
            "uniform": k / num_experts, "domain_share": {d: hits[d] / n[d] for d in domains},
            "domain_mix": {d: hits[d] / total if total else 0.0 for d in domains},
            "first_choice_share": first / total if total else 0.0,
            "top_tokens": top_tokens(vocab, min_count, n_tokens)[expert], "contexts": contexts}


def stand_in_model(vocab_size: int, seed: int = 0):
    """course.stand_in_model, the one stand-in LFM2-MoE (kept here for the callers of routing)."""
    from .course import stand_in_model as one_stand_in

    return one_stand_in(vocab_size, seed)
