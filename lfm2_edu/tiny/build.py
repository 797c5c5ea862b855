"""Rebuild the shipped small models from scratch: corpus, tokenizer, four training runs, checks.

    python -m lfm2_edu.tiny.build            (or: make small-model)

One recipe, four models, so that the chapters can compare what balancing does:

    tiny-lfm2-moe        LFM2-MoE in miniature, experts balanced by the expert bias (the default)
    tiny-lfm2-moe-aux    the same, balanced by the auxiliary load-balancing loss (Switch/GShard)
    tiny-lfm2-moe-none   the same, with no balancing at all
    tiny-lfm2-dense      a dense LFM2 with as many active parameters per token (do experts matter?)

1. the corpus (corpus.py) and a byte-level BPE tokenizer in LFM2's format (tokenizer_build.py);
   the held-out token windows that every routing number is measured on (heldout.py);
2. four training runs of one recipe, two at a time (one CPU thread each);
3. the weights are rounded to bf16, as LFM2 ships its own, and everything below is measured on
   them: validation loss per domain against a unigram baseline, chat arithmetic on held-out
   questions, MaxVio per MoE layer beside the noise floor of a random router, specialisation and
   I(expert; domain) beside an untrained model, how close the router's choices are;
4. reference logits computed with transformers, model cards, training logs, and the folders moved
   into the package in one step (a failed build never leaves half a checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..checkpoint import SHIPPED_DIR, SHIPPED_MODEL, SHIPPED_MODELS, load_model, save_model
from ..config import LFM2Config
from ..model import LFM2Model
from ..params import count_parameters
from .. import routing
from ..train import TrainConfig, init_weights, train
from . import arithmetic, heldout
from .corpus import DOMAINS, build_corpus, python_version
from .data import domain_batches, token_stream, validation_windows
from .tokenizer_build import save_tokenizer, train_tokenizer

C, A = "conv", "full_attention"
# LFM2-8B-A1B in miniature: its first 8 layers' pattern (attention at 2 and 6), 2 dense layers,
# GQA with 2 query heads per kv head, 16 experts of which 2 are used (the real one: 4 of 32).
MODEL = LFM2Config(
    model_type="lfm2_moe", vocab_size=4096, hidden_size=128, num_hidden_layers=8,
    num_attention_heads=4, num_key_value_heads=2, layer_types=[C, C, A, C, C, C, A, C],
    intermediate_size=448, num_dense_layers=2, num_experts=16, num_experts_per_tok=2,
    moe_intermediate_size=128, use_expert_bias=True, norm_topk_prob=True, routed_scaling_factor=1.0,
    max_position_embeddings=2048, bos_token_id=1, eos_token_id=7, pad_token_id=0,
)


def dense_twin(moe: LFM2Config) -> LFM2Config:
    """A dense LFM2 of the same shape whose one MLP width gives as many active parameters per token."""
    base = replace(moe, model_type="lfm2", num_dense_layers=moe.num_hidden_layers, num_experts=0,
                   num_experts_per_tok=0, moe_intermediate_size=0, use_expert_bias=False, intermediate_size=1)
    per_unit = 3 * moe.hidden_size * moe.num_hidden_layers  # active parameters per unit of MLP width
    width = round((count_parameters(moe).active - count_parameters(base).active) / per_unit) + 1
    return replace(base, intermediate_size=width)


# Rows of each batch per domain: arithmetic, the hardest to learn exactly, gets the most (11 rows
# at about half worked sums: over a million tokens of them in a run); the generated JSON records,
# learnt early, the fewest.
BATCH_ROWS = {"prose": 2, "code": 2, "arithmetic": 11, "data": 1}
TRAIN = TrainConfig(steps=800, batch_size=sum(BATCH_ROWS.values()), seq_len=256, lr=3e-3, warmup_steps=50, bias_update_rate=3e-3,
                    aux_loss_coef=1e-2, z_loss_coef=1e-3, seed=0, log_every=10)
RUNS = {  # shipped name -> (config, balancing)
    SHIPPED_MODEL: (MODEL, "bias"),
    "tiny-lfm2-moe-aux": (replace(MODEL, use_expert_bias=False), "aux_loss"),
    "tiny-lfm2-moe-none": (replace(MODEL, use_expert_bias=False), "none"),
    "tiny-lfm2-dense": (dense_twin(MODEL), "none"),
}
assert set(RUNS) == set(SHIPPED_MODELS)
BALANCING_NAMES = {"bias": "expert bias", "aux_loss": "auxiliary loss", "none": "none"}
CORPUS_SEED = 0
PARALLEL_RUNS = 2  # one CPU thread each
ARITHMETIC_QUESTIONS = 200  # of each kind
UNTRAINED_SEED = 1
PROMPTS = {
    "prose": "The import statement",
    "code": "def __init__(self, name):\n",
    "arithmetic": "17 + 25 = 42\n8 * 7 = 56\n35 + 12 =",
}
REFERENCE_TEXTS = {
    "prose": "A function definition is an executable statement.",
    "code": "for key, value in sorted(items.items()):\n    print(key, value)",
    "arithmetic": "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n",
}
GENERATION = {"bos_token_id": 1, "eos_token_id": 7, "pad_token_id": 0, "do_sample": True,
              "temperature": 0.3, "min_p": 0.15, "repetition_penalty": 1.05}


def log(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------- training runs
def train_run(workdir: Path, name: str, steps: int) -> None:
    """Child process: train one run on the saved token streams, save model and log."""
    torch.set_num_threads(1)  # runs side by side, one core each
    streams = torch.load(workdir / "streams.pt")["train"]
    config, balance = RUNS[name]
    cfg = replace(TRAIN, balance=balance, steps=steps)
    torch.manual_seed(cfg.seed)
    model = init_weights(LFM2Model(config))
    batches = domain_batches(streams, BATCH_ROWS, cfg.seq_len, seed=cfg.seed)
    history = train(model, batches, cfg)
    save_model(model, workdir / "trained" / name)
    (workdir / f"{name}.log.json").write_text(json.dumps(asdict(history)))


def run_all(workdir: Path, steps: int) -> None:
    """The four runs, PARALLEL_RUNS at a time, each in its own process; relay their progress."""
    waiting, running = list(RUNS), {}
    start = time.time()
    while waiting or running:
        while waiting and len(running) < PARALLEL_RUNS:
            name = waiting.pop(0)
            out = open(workdir / f"{name}.out", "w")
            proc = subprocess.Popen([sys.executable, "-m", "lfm2_edu.tiny.build", "--train-run", name,
                                     "--workdir", str(workdir), "--steps", str(steps)],
                                    stdout=out, stderr=subprocess.STDOUT)
            running[name] = (proc, out)
            log(f"  started {name} ({BALANCING_NAMES[RUNS[name][1]]})")
        time.sleep(20)
        for name, (proc, out) in list(running.items()):
            lines = (workdir / f"{name}.out").read_text().splitlines()
            if proc.poll() is None:
                if lines:
                    log(f"  [{name}] {lines[-1]}")
                continue
            out.close()
            del running[name]
            if proc.returncode != 0:
                for other, _ in running.values():
                    other.kill()
                raise RuntimeError(f"training run '{name}' failed:\n" + "\n".join(lines[-40:]))
            log(f"  finished {name} after {time.time() - start:.0f} s of training")


# ---------------------------------------------------------------------------------- evaluation
def as_shipped(model: LFM2Model) -> LFM2Model:
    """Weights rounded to bf16 (the shipped dtype); expert_bias stays fp32 as in the reference."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model


@torch.no_grad()
def domain_losses(model: LFM2Model, windows: dict[str, torch.Tensor], unigram: torch.Tensor) -> dict:
    """Validation loss per domain (nats per token), and the unigram baseline's on the same tokens."""
    out = {"loss": {}, "unigram_loss": {}}
    for domain, w in windows.items():
        losses = []
        for start in range(0, len(w), 8):
            chunk = w[start:start + 8]
            logits = model(chunk[:, :-1]).logits  # (n, T, V)
            losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(),
                                                            reduction="sum"))
        out["loss"][domain] = float(sum(losses) / w[:, 1:].numel())
        out["unigram_loss"][domain] = float(-unigram.log()[w[:, 1:]].mean())
    return out


@torch.no_grad()
def routing_facts(model: LFM2Model, windows: dict[str, torch.Tensor]) -> dict:
    """On the held-out windows, per MoE layer: load, MaxVio, the top expert of each domain and its
    share, I(expert; domain), how close the choices were (k-th vs (k+1)-th selection score), and
    the share of tokens that zeroing expert_bias re-routes."""
    cfg = model.config
    E, k = cfg.num_experts, cfg.num_experts_per_tok
    by_domain = {d: routing.collect_routing(model, w[:, :-1], names=("selected", "scores", "selection_scores"))
                 for d, w in windows.items()}
    facts = {"max_violation": {}, "load": {}, "top_expert": {d: {} for d in windows}, "domain_information": {},
             "margin_median": {}, "rerouted_without_bias": {}}
    for i in cfg.moe_layers:
        selected = {d: r[i]["selected"].reshape(-1, k) for d, r in by_domain.items()}
        load = sum(routing.expert_load(s, E) for s in selected.values())
        facts["load"][i] = load.tolist()
        facts["max_violation"][i] = routing.max_violation(load)
        for d, s in selected.items():
            facts["top_expert"][d][i] = routing.top_expert_share(s, E)
        facts["domain_information"][i] = routing.domain_information(selected, E)
        selection = torch.cat([r[i]["selection_scores"].reshape(-1, E) for r in by_domain.values()])
        facts["margin_median"][i] = float(routing.selection_margin(selection, k).median())
        scores = torch.cat([r[i]["scores"].reshape(-1, E) for r in by_domain.values()])
        facts["rerouted_without_bias"][i] = float(routing.rerouted_without_bias(scores, torch.cat(list(selected.values()))).float().mean())
    tokens = sum(w[:, :-1].numel() for w in windows.values())
    facts["tokens"] = tokens
    facts["noise_floor"] = routing.max_violation_noise_floor(tokens, E, k)
    return facts


@torch.no_grad()
def greedy(model: LFM2Model, tokenizer, prompt: str, new_tokens: int = 48) -> str:
    from ..generate import generate

    ids = tokenizer.encode(prompt)  # with bos, as the tokenizer adds it
    return tokenizer.decode(generate(model, ids, new_tokens, stop_token_ids=[MODEL.eos_token_id, 2])[0].new_ids,
                            skip_special_tokens=True)


def reference_logits(folder: Path, tokenizer) -> dict[str, torch.Tensor]:
    """Logits of the reference implementation (transformers, fp32, eager) for a few fixed inputs."""
    import transformers

    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    if hasattr(ref, "set_experts_implementation") and ref.config.model_type == "lfm2_moe":
        ref.set_experts_implementation("eager")
    tensors = {}
    with torch.no_grad():
        for name, text in REFERENCE_TEXTS.items():
            ids = torch.tensor([tokenizer.encode(text)])
            tensors[f"{name}.input_ids"] = ids
            tensors[f"{name}.logits"] = ref(ids, use_cache=False).logits.float()
    return tensors


def evaluate(name: str, model: LFM2Model, tokenizer, windows: dict, unigram: torch.Tensor) -> dict:
    log(f"  {name}: loss per domain, arithmetic ({ARITHMETIC_QUESTIONS} questions of each kind), routing")
    result = domain_losses(model, windows, unigram)
    result["arithmetic"] = {kind: {"correct": r["correct"], "total": r["total"], "examples": r["examples"]}
                            for kind, r in arithmetic.report(model, tokenizer, ARITHMETIC_QUESTIONS).items()}
    if model.config.is_moe:
        result["routing"] = routing_facts(model, windows)
    result["continuations"] = {d: greedy(model, tokenizer, p) for d, p in PROMPTS.items()}
    return result


# ------------------------------------------------------------------------------------ the card
def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def model_card(facts: dict) -> str:
    """The card of all four models (each folder's README.md starts with its own summary)."""
    results, untrained = facts["results"], facts["untrained"]
    moe_names = [n for n in RUNS if RUNS[n][0].is_moe]
    cfg, k, E = MODEL, MODEL.num_experts_per_tok, MODEL.num_experts
    layers = cfg.moe_layers
    sizes, tokens = facts["sizes"], facts["tokens"]
    floor = results[SHIPPED_MODEL]["routing"]["noise_floor"]
    n_routed = results[SHIPPED_MODEL]["routing"]["tokens"]

    def acc(name: str, kind: str) -> str:
        r = results[name]["arithmetic"][kind]
        return f"{r['correct']}/{r['total']} ({r['correct'] / r['total']:.0%})"

    parts = [
        "# The shipped models: four small LFM2 models trained by lfm2_edu",
        "",
        "One recipe, four runs, so that the chapters can show what load balancing does. Rebuild all of "
        "them with `make small-model` (`python -m lfm2_edu.tiny.build`); every number below is printed "
        "by that command, measured on the shipped (bf16) weights.",
        "",
        table([[f"`{n}`", SHIPPED_MODELS[n], f"{count_parameters(RUNS[n][0]).total:,}",
                f"{count_parameters(RUNS[n][0]).active:,}"] for n in RUNS],
              ["model", "what it is", "parameters", "active per token"]),
        "",
        "## The models",
        "",
        f"- MoE ({', '.join(moe_names)}): LFM2-8B-A1B in miniature. {cfg.num_hidden_layers} layers "
        f"({', '.join(cfg.layer_types)}); layers {cfg.dense_layers} dense (SwiGLU {cfg.intermediate_size}), the "
        f"rest MoE: {E} experts of width {cfg.moe_intermediate_size}, top-{k}, sigmoid router (LFM2-8B-A1B: "
        f"32 experts, top-4); hidden {cfg.hidden_size}, {cfg.num_attention_heads} query heads sharing "
        f"{cfg.num_key_value_heads} kv heads, short conv kernel {cfg.conv_L_cache}, vocabulary {cfg.vocab_size}, "
        "tied embeddings. Only tiny-lfm2-moe has an `expert_bias` buffer (as LFM2-8B-A1B does).",
        f"- Dense (tiny-lfm2-dense): the same stack with a SwiGLU MLP of width "
        f"{RUNS['tiny-lfm2-dense'][0].intermediate_size} in every layer, which gives it as many active "
        "parameters per token as the MoE models (within one MLP unit).",
        "- Weights in bf16 (expert_bias in fp32), the hub layout: lfm2_edu and transformers read them.",
        "",
        "## Data",
        "",
        f"Made offline from Python {facts['python']}'s own files and a seeded generator (seed {CORPUS_SEED}); "
        "5% of the documents of each domain (chosen by a hash of their name) are held out. "
        f"{arithmetic.HELDOUT_SHARE:.0%} of the additions and subtractions of two numbers below "
        f"{arithmetic.SMALL} (chosen by a hash of the problem) are in no document at all: the arithmetic "
        "questions below are drawn from those.",
        "",
        table([[d, f"{sizes[d]['train_docs']:,}", f"{sizes[d]['train_chars']:,}", f"{tokens['train'][d]:,}",
                f"{sizes[d]['valid_docs']:,}", f"{tokens['valid'][d]:,}"] for d in DOMAINS],
              ["domain", "train docs", "train chars", "train tokens", "valid docs", "valid tokens"]),
        "",
        "prose: the language reference topics of `pydoc_data` and standard-library docstrings; code: "
        "standard-library source with docstrings removed; arithmetic: generated sums, differences and "
        "products, five sixths of the documents as chats (a sum answered column by column, e.g. "
        f"{arithmetic.column_addition(48, 86)!r}), the rest as lines of equations; data: generated JSON records.",
        "",
        f"**The held-out set** (`{heldout.FILE_NAME}`, shipped beside the models): {facts['heldout_windows']} "
        f"windows of {TRAIN.seq_len} tokens per domain from the validation documents, {n_routed:,} tokens in "
        "all. Every routing number below, in the chapters and in the tests is measured on these same "
        "token windows, so they do not change with the Python version that runs them. This card routes "
        f"each window's first {TRAIN.seq_len} positions, bos included; the chapters route the "
        f"{TRAIN.seq_len} after bos, so their numbers can differ from the card's in the second decimal.",
        "",
        "## Training",
        "",
        f"{facts['steps']} steps of {TRAIN.batch_size} x {TRAIN.seq_len} tokens (rows per domain: "
        + ", ".join(f"{d} {n}" for d, n in BATCH_ROWS.items()) + f"), AdamW (lr {TRAIN.lr}, warmup {TRAIN.warmup_steps}, cosine to {TRAIN.min_lr_ratio:g}x, weight "
        f"decay {TRAIN.weight_decay}), seed {TRAIN.seed}. Balancing: expert bias with update rate u = "
        f"{TRAIN.bias_update_rate} (b_i += u * sign(mean load - load_i) after every step); auxiliary loss "
        f"alpha = {TRAIN.aux_loss_coef} per MoE layer with router z-loss beta = {TRAIN.z_loss_coef}; none. "
        f"Four runs, {PARALLEL_RUNS} at a time on one CPU thread each. Training time per run: "
        + ", ".join(f"{n} {facts['train_seconds'][n]:.0f} s" for n in RUNS)
        + f"; whole build {facts['build_seconds'] / 60:.1f} min on {facts['machine']}.",
        "",
        "## Validation loss (nats per token)",
        "",
        table([[d, f"{results[SHIPPED_MODEL]['unigram_loss'][d]:.3f}"] + [f"{results[n]['loss'][d]:.3f}" for n in RUNS]
               for d in DOMAINS], ["domain", "unigram baseline"] + list(RUNS)),
        "",
        "## Arithmetic in chat",
        "",
        f"`python -m lfm2_edu.tiny.arithmetic --model NAME` asks \"What is a + b?\" in the chat template, "
        f"decodes greedily and counts exact answers ({ARITHMETIC_QUESTIONS} questions of each kind, seeded):",
        "",
        table([[kind] + [acc(n, kind) for n in RUNS] for kind in results[SHIPPED_MODEL]["arithmetic"]],
              ["question"] + list(RUNS)),
        "",
        "## Load balance: MaxVio per MoE layer on the held-out set",
        "",
        "MaxVio = (max load - mean load) / mean load (Wang et al. 2024): 0 is perfect balance, "
        f"E/k - 1 = {E // k - 1} the worst a top-{k} router can do. Even a perfectly fair router shows some "
        f"imbalance on a finite sample: a uniformly random top-{k} router on the same {n_routed:,} tokens "
        f"gives MaxVio {floor['mean']:.3f} on average (95th percentile {floor['p95']:.3f}), the noise floor.",
        "",
        table([[i] + [f"{results[n]['routing']['max_violation'][i]:.3f}" for n in moe_names]
               + [f"{untrained['routing']['max_violation'][i]:.3f}", f"{floor['mean']:.3f}"] for i in layers],
              ["layer"] + moe_names + ["untrained (same shape)", "noise floor"]),
        "",
        "## Specialisation",
        "",
        f"I(expert; domain) in bits per layer: how much the expert a routing slot went to tells about the "
        f"domain of its token (0: every domain spreads over the experts alike; at most log2(4) = 2 bits). "
        f"An untrained model of the same shape (random router, seed {UNTRAINED_SEED}) is the control.",
        "",
        table([[i] + [f"{results[n]['routing']['domain_information'][i]:.3f}" for n in moe_names]
               + [f"{untrained['routing']['domain_information'][i]:.3f}"] for i in layers],
              ["layer"] + moe_names + ["untrained"]),
        "",
        f"Share of a domain's tokens routed to its most-used expert, {SHIPPED_MODEL} (uniform: k/E = {k / E:.3f}):",
        "",
        table([[i] + [f"{results[SHIPPED_MODEL]['routing']['top_expert'][d][i][1]:.2f} "
                      f"(e{results[SHIPPED_MODEL]['routing']['top_expert'][d][i][0]})" for d in DOMAINS] for i in layers],
              ["layer"] + list(DOMAINS)),
        "",
        "## How close the router's choices are",
        "",
        "Median margin between the k-th and (k+1)-th selection score (scores + expert_bias) per token, and "
        f"for {SHIPPED_MODEL} the share of tokens whose set of experts changes when its expert_bias is set "
        "to zero (the others have no bias).",
        "",
        table([[i] + [f"{results[n]['routing']['margin_median'][i]:.4f}" for n in moe_names]
               + [f"{results[SHIPPED_MODEL]['routing']['rerouted_without_bias'][i]:.1%}"] for i in layers],
              ["layer"] + [f"margin, {n}" for n in moe_names] + [f"re-routed without bias, {SHIPPED_MODEL}"]),
        "",
        "## What holds at this size, and what does not",
        "",
    ]
    parts += facts["lessons"]
    parts += ["", "## Greedy continuations", ""]
    for n in RUNS:
        parts += [f"### {n}", ""]
        for domain, prompt in PROMPTS.items():
            parts += [f"{domain}, prompt {prompt!r}:", "", "```", prompt + results[n]["continuations"][domain], "```", ""]
    parts += [
        "## Files",
        "",
        "Each model folder: config.json, model.safetensors, generation_config.json, tokenizer.json, "
        "tokenizer_config.json (hub layout, read by lfm2_edu and by transformers); "
        f"reference_logits.safetensors (transformers {facts['transformers']} fp32 logits for fixed inputs); "
        "training_log.json (loss, per-layer expert loads, biases and auxiliary losses every "
        f"{TRAIN.log_every} steps); metrics.json (the numbers above). Beside them: `{heldout.FILE_NAME}`.",
        "",
    ]
    return "\n".join(parts)


def late_training_max_violation(log: dict, last: int = 10) -> float:
    """Worst-layer MaxVio of the training batches, averaged over the last `last` logged steps."""
    per_step = [max(routing.max_violation(torch.tensor(load)) for load in step.values()) for step in log["load"][-last:]]
    return sum(per_step) / len(per_step)


def lessons(results: dict, untrained: dict, logs: dict) -> list[str]:
    """Plain sentences, each computed from the measured numbers: what the comparison shows here."""
    def mean_loss(n):
        return sum(results[n]["loss"][d] for d in DOMAINS) / len(DOMAINS)

    def worst(n):
        return max(results[n]["routing"]["max_violation"].values())

    def info(r):
        return sum(r["routing"]["domain_information"].values()) / len(MODEL.moe_layers)

    bias, aux, none, dense = SHIPPED_MODEL, "tiny-lfm2-moe-aux", "tiny-lfm2-moe-none", "tiny-lfm2-dense"
    moe_losses = [mean_loss(n) for n in (bias, aux, none)]
    out = [
        f"- Collapse: without balancing the worst layer's MaxVio is {worst(none):.2f}, against {worst(bias):.2f} "
        f"with the expert bias and {worst(aux):.2f} with the auxiliary loss.",
        "- Balance holds for the mix it was trained on: the held-out set weights the four domains equally, "
        f"while {BATCH_ROWS['arithmetic']} of every {sum(BATCH_ROWS.values())} training rows were arithmetic. On "
        f"the training batches of the last {10 * TRAIN.log_every} steps the worst layer's MaxVio was "
        f"{late_training_max_violation(logs[bias]):.2f} (expert bias), {late_training_max_violation(logs[aux]):.2f} "
        f"(auxiliary loss) and {late_training_max_violation(logs[none]):.2f} (none).",
        f"- Loss: the mean validation loss over the four domains is {mean_loss(bias):.3f} (expert bias), "
        f"{mean_loss(aux):.3f} (auxiliary loss), {mean_loss(none):.3f} (no balancing) and {mean_loss(dense):.3f} "
        "(dense, same active parameters). "
        + ("At this size an imbalanced router costs no loss: balance matters for how the work spreads over "
           "hardware (chapter 12), not for quality here."
           if mean_loss(none) <= min(mean_loss(bias), mean_loss(aux)) + 0.01 else
           "Here the unbalanced run is measurably worse."),
        "- Experts against a dense MLP: at equal active parameters the MoE models' mean loss is "
        + (f"{mean_loss(dense) - max(moe_losses):.3f} to {mean_loss(dense) - min(moe_losses):.3f} nats below the "
           "dense model's. With one seed of each, a gap this small does not show that the experts help at "
           "this size."
           if min(moe_losses) < mean_loss(dense) - 0.01 else "not lower than the dense model's."),
        f"- Specialisation: mean I(expert; domain) per MoE layer is {info(results[bias]):.3f} bits (expert bias), "
        f"{info(results[aux]):.3f} (auxiliary loss), {info(results[none]):.3f} (none), {info(untrained):.3f} "
        "(untrained). DeepSeek-V3 reports that auxiliary-loss-free balancing keeps more expert specialisation "
        "than an auxiliary loss; here the expert bias's is "
        + ("higher" if info(results[bias]) > info(results[aux]) else "not higher")
        + " than the auxiliary loss's (one seed, a small model: no more than that).",
    ]
    return out


def short_card(name: str, result: dict) -> str:
    config, balance = RUNS[name]
    counts = count_parameters(config)
    lines = [f"# {name}", "", f"{SHIPPED_MODELS[name]}. One of four small models trained by lfm2_edu with one "
             f"recipe (balancing: {BALANCING_NAMES[balance]}); {counts.total:,} parameters, {counts.active:,} active "
             "per token, bf16 weights in the hub layout.", "",
             f"The card of all four, with every number measured by the build: [{SHIPPED_MODEL}]"
             f"(../{SHIPPED_MODEL}/README.md).", ""]
    lines += ["| domain | validation loss |", "|---|---|"]
    lines += [f"| {d} | {result['loss'][d]:.3f} |" for d in DOMAINS]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- main
def build(out_dir: Path, steps: int) -> int:
    t0 = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="lfm2-edu-build-"))
    try:
        log("1/5 corpus")
        corpus = build_corpus(seed=CORPUS_SEED)
        sizes = corpus.sizes()
        for d in DOMAINS:
            log(f"  {d:>10}: {sizes[d]['train_chars']:>9,} train chars, {sizes[d]['valid_chars']:>7,} valid chars")
        log("2/5 tokenizer and token streams")
        backend = train_tokenizer([t for d in DOMAINS for t in corpus.train[d]], MODEL.vocab_size)
        streams = {split: {d: token_stream(backend, getattr(corpus, split)[d]) for d in DOMAINS}
                   for split in ("train", "valid")}
        torch.save(streams, workdir / "streams.pt")
        tokens = {split: {d: len(s) for d, s in streams[split].items()} for split in streams}
        log(f"  train tokens {tokens['train']}")
        windows = {d: validation_windows(streams["valid"][d], TRAIN.seq_len, heldout.WINDOWS_PER_DOMAIN) for d in DOMAINS}

        log(f"3/5 training: {len(RUNS)} runs of {steps} steps, {PARALLEL_RUNS} at a time")
        run_all(workdir, steps)
        logs = {n: json.loads((workdir / f"{n}.log.json").read_text()) for n in RUNS}

        log("4/5 evaluation (bf16-rounded weights)")
        stage = workdir / "shipped"
        save_tokenizer(backend, workdir, MODEL.max_position_embeddings)
        from ..tokenizer import load_tokenizer
        tokenizer = load_tokenizer(workdir)
        counts = torch.bincount(torch.cat(list(streams["train"].values())), minlength=MODEL.vocab_size)
        unigram = (counts + 1).float() / (counts.sum() + MODEL.vocab_size)  # add-one smoothing
        torch.manual_seed(0)
        results, models = {}, {}
        for name in RUNS:
            models[name] = as_shipped(load_model(workdir / "trained" / name))
            results[name] = evaluate(name, models[name], tokenizer, windows, unigram)
        torch.manual_seed(UNTRAINED_SEED)
        untrained = {"routing": routing_facts(init_weights(LFM2Model(MODEL)).eval(), windows)}

        log("5/5 writing the checkpoints")
        import transformers
        from safetensors.torch import save_file
        machine = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}"
        facts = {"steps": steps, "sizes": sizes, "tokens": tokens, "results": results, "untrained": untrained,
                 "python": python_version(), "machine": machine, "transformers": transformers.__version__,
                 "heldout_windows": heldout.WINDOWS_PER_DOMAIN,
                 "train_seconds": {n: logs[n]["seconds"] for n in logs}, "lessons": lessons(results, untrained, logs)}
        for name in RUNS:
            folder = stage / name
            save_model(models[name].to_dtype(torch.bfloat16), folder)
            save_tokenizer(backend, folder, MODEL.max_position_embeddings)
            (folder / "generation_config.json").write_text(json.dumps(GENERATION, indent=2) + "\n")
            save_file(reference_logits(folder, tokenizer), str(folder / "reference_logits.safetensors"),
                      metadata={"transformers": transformers.__version__, "dtype": "float32"})
            (folder / "training_log.json").write_text(json.dumps(logs[name], separators=(",", ":")))
        heldout.save(windows, stage / heldout.FILE_NAME, tokenizer_file=stage / SHIPPED_MODEL / "tokenizer.json")
        facts["build_seconds"] = time.time() - t0
        for name in RUNS:
            folder = stage / name
            (folder / "metrics.json").write_text(json.dumps(
                {"result": results[name], "untrained": untrained, "corpus": sizes, "tokens": tokens,
                 "train_seconds": facts["train_seconds"][name], "build_seconds": facts["build_seconds"],
                 "machine": machine, "python": python_version()}, indent=1))
        card = model_card(facts)
        (stage / SHIPPED_MODEL / "README.md").write_text(card)
        for name in RUNS:
            if name != SHIPPED_MODEL:
                (stage / name / "README.md").write_text(short_card(name, results[name]))
        # Into the package in one move per folder, after everything was written, with the usual
        # permissions (the build's temporary folder and safetensors' own files are private).
        umask = os.umask(0)
        os.umask(umask)
        for path in stage.rglob("*"):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in [*RUNS, heldout.FILE_NAME]:
            target = out_dir / item
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(stage / item), str(target))
        log("")
        log(card)
        log(f"build time {facts['build_seconds'] / 60:.1f} min")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR, help="the folder that receives the models")
    parser.add_argument("--steps", type=int, default=TRAIN.steps, help="training steps per run (a smoke test uses few)")
    parser.add_argument("--train-run", choices=list(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_run:
        train_run(args.workdir, args.train_run, args.steps)
        return 0
    return build(args.out, args.steps)


if __name__ == "__main__":
    sys.exit(main())
