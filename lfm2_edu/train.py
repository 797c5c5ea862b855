"""Training a (small) LFM2-MoE: next-token loss, AdamW, warmup + cosine schedule, and the
auxiliary-loss-free load balancing of LFM2-MoE and DeepSeek-V3.

Load balancing. A router trained only by the language-model loss tends to collapse: experts that
win early get more tokens, get better, and win more. LFM2-MoE adds a per-expert bias b to the
scores when *choosing* experts (never when mixing them), and after every step nudges it:

    load_i = number of tokens routed to expert i in this step   (per MoE layer)
    b_i   += u * sign(mean(load) - load_i)                       u ~ 1e-3

Underloaded experts become easier to choose, overloaded ones harder, with no extra loss term
pulling on the router's weights. `balance=False` trains the same recipe without the update.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .model import LFM2Model
from .routing import expert_load, max_violation
from .trace import Capture


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16  # sequences per step
    seq_len: int = 256  # tokens per sequence
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    balance: bool = True  # the expert-bias update
    bias_update_rate: float = 1e-3  # u
    seed: int = 0
    log_every: int = 10


@dataclass
class TrainLog:
    """What happened, every `log_every` steps: enough to redraw every training figure."""

    config: dict
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    load: list[dict[int, list[int]]] = field(default_factory=list)  # MoE layer -> tokens per expert
    expert_bias: list[dict[int, list[float]]] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0


@torch.no_grad()
def init_weights(model: LFM2Model, std: float = 0.02) -> LFM2Model:
    """Fresh weights as the reference initialises them: N(0, std) matrices, unit norms, zero biases.

    (torch's own defaults would give the tied head logits of size sqrt(H) at the start.)
    """
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            p.normal_(0.0, std)
    for name, b in model.named_buffers():
        if name.endswith("expert_bias"):
            b.zero_()
    return model


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps  # linear warmup
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def expert_loads(capture: Capture, model: LFM2Model) -> dict[int, torch.Tensor]:
    """Tokens routed to each expert, per MoE layer, from a Capture of `layers.*.moe.selected`."""
    E = model.config.num_experts
    return {i: expert_load(capture[f"layers.{i}.moe.selected"], E)
            for i in range(model.config.num_hidden_layers) if model.config.is_moe_layer(i)}


@torch.no_grad()
def update_expert_bias(model: LFM2Model, loads: dict[int, torch.Tensor], rate: float) -> None:
    """b_i += u * sign(mean_load - load_i) in every MoE layer."""
    for i, load in loads.items():
        bias = model.layers[i].feed_forward.expert_bias
        load = load.to(bias.device, torch.float32)
        bias += rate * torch.sign(load.mean() - load)  # (E,)


def train(model: LFM2Model, batches, cfg: TrainConfig, progress: bool = True) -> TrainLog:
    """Train `model` in place on `batches` (an iterator of (B, T+1) token tensors)."""
    torch.manual_seed(cfg.seed)
    if cfg.balance and model.config.is_moe and not model.config.use_expert_bias:
        raise ValueError("train: expected a model with use_expert_bias=True for balance=True, found none")
    model.train().requires_grad_(True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]  # matrices decay; norms do not
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    log = TrainLog(config=asdict(cfg))
    capture = Capture("layers.*.moe.selected")
    start = time.time()
    with torch.enable_grad():  # also when the caller (a notebook) turned gradients off
        for step in range(cfg.steps):
            tokens = next(batches)  # (B, T+1)
            lr = learning_rate(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(tokens[:, :-1], capture=capture).logits  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())  # next-token loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            loads = expert_loads(capture, model) if model.config.is_moe else {}
            if cfg.balance and loads:
                update_expert_bias(model, loads, cfg.bias_update_rate)
            log.tokens += tokens[:, 1:].numel()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                log.steps.append(step)
                log.loss.append(round(loss.item(), 4))
                log.lr.append(lr)
                log.load.append({i: load.tolist() for i, load in loads.items()})
                log.expert_bias.append({i: [round(b, 5) for b in model.layers[i].feed_forward.expert_bias.tolist()]
                                        for i in loads})
                if progress:
                    worst = max((max_violation(load) for load in loads.values()), default=0.0)
                    elapsed = time.time() - start
                    eta = elapsed / (step + 1) * (cfg.steps - step - 1)
                    print(f"step {step + 1:>5}/{cfg.steps}  loss {loss.item():.3f}  lr {lr:.2e}  "
                          f"worst MaxVio {worst:.2f}  {elapsed:5.0f}s elapsed, ~{eta:4.0f}s left", file=sys.stderr, flush=True)
    log.seconds = time.time() - start
    model.eval().requires_grad_(False)
    return log
