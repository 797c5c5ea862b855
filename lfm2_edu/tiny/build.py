"""Rebuild the shipped small LFM2-MoE from scratch: corpus, tokenizer, two training runs, checks.

    python -m lfm2_edu.tiny.build            (or: make small-model)

1. the corpus (corpus.py) and a byte-level BPE tokenizer in LFM2's format (tokenizer_build.py);
2. two training runs of one recipe, side by side (one CPU thread each): with the expert-bias
   load balancing (the shipped model) and without it (for comparison);
3. the shipped weights are rounded to bf16, as LFM2 ships its own, and everything below is
   measured on them: validation loss per domain against a unigram baseline, greedy continuations,
   MaxVio per MoE layer for both runs, and how strongly each domain prefers one expert;
4. reference logits computed with transformers, a model card, the training logs, and the folder
   moved into the package in one step (a failed build never leaves half a checkpoint).
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
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoint import SHIPPED_DIR, SHIPPED_MODEL, load_model, save_model
from ..config import LFM2Config
from ..model import LFM2Model
from ..params import count_parameters
from ..routing import expert_load, max_violation, top_expert_share
from ..trace import Capture
from ..train import TrainConfig, init_weights, train
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
TRAIN = TrainConfig(steps=1000, batch_size=16, seq_len=256, lr=3e-3, warmup_steps=50,
                    bias_update_rate=3e-3, seed=0, log_every=10)
CORPUS_SEED = 0
VALID_WINDOWS = 24  # per domain, of TRAIN.seq_len tokens
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


# ------------------------------------------------------------------------------ one training run
def train_run(workdir: Path, name: str, steps: int) -> None:
    """Child process: train one run on the saved token streams, save model and log."""
    torch.set_num_threads(1)  # two runs side by side on a 2-core machine
    streams = torch.load(workdir / "streams.pt")["train"]
    cfg = TrainConfig(**{**asdict(TRAIN), "balance": name == "balanced", "steps": steps})
    torch.manual_seed(cfg.seed)
    model = init_weights(LFM2Model(MODEL))
    batches = domain_batches(streams, cfg.batch_size, cfg.seq_len, seed=cfg.seed)
    history = train(model, batches, cfg)
    save_model(model, workdir / name)
    (workdir / f"{name}.log.json").write_text(json.dumps(asdict(history)))


def run_both(workdir: Path, steps: int) -> dict[str, float]:
    """Start the two runs side by side; relay the balanced run's progress."""
    procs = {}
    for name in ("balanced", "unbalanced"):
        out = open(workdir / f"{name}.out", "w")
        procs[name] = (subprocess.Popen([sys.executable, "-m", "lfm2_edu.tiny.build", "--train-run", name,
                                         "--workdir", str(workdir), "--steps", str(steps)], stdout=out, stderr=subprocess.STDOUT), out)
    start, shown = time.time(), 0
    while any(p.poll() is None for p, _ in procs.values()):
        time.sleep(15)
        lines = (workdir / "balanced.out").read_text().splitlines()
        if len(lines) > shown and lines:
            log(f"  [balanced] {lines[-1]}")
            shown = len(lines)
    for name, (p, out) in procs.items():
        out.close()
        if p.returncode != 0:
            raise RuntimeError(f"training run '{name}' failed:\n" + (workdir / f"{name}.out").read_text()[-3000:])
    return {"both runs, wall clock": time.time() - start}


# ---------------------------------------------------------------------------------- evaluation
def as_shipped(model: LFM2Model) -> LFM2Model:
    """Weights rounded to bf16 (the shipped dtype); expert_bias stays fp32 as in the reference."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model


@torch.no_grad()
def evaluate(model: LFM2Model, valid: dict[str, torch.Tensor], unigram: torch.Tensor) -> dict:
    """Loss per domain against the unigram baseline; loads and per-domain routing per MoE layer."""
    cfg = model.config
    moe_layers = cfg.moe_layers
    out = {"loss": {}, "unigram_loss": {}, "load": {i: torch.zeros(cfg.num_experts, dtype=torch.long)
                                                      for i in moe_layers}, "top_expert": {}}
    log_unigram = unigram.log()
    for domain, windows in valid.items():
        cap = Capture("layers.*.moe.selected")
        logits = model(windows[:, :-1], capture=cap).logits  # (N, T, V)
        targets = windows[:, 1:]
        out["loss"][domain] = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
        out["unigram_loss"][domain] = float(-log_unigram[targets].mean())
        out["top_expert"][domain] = {}
        for i in moe_layers:
            selected = cap[f"layers.{i}.moe.selected"].reshape(-1, cfg.num_experts_per_tok)
            out["load"][i] += expert_load(selected, cfg.num_experts)
            out["top_expert"][domain][i] = top_expert_share(selected, cfg.num_experts)
    out["max_violation"] = {i: max_violation(load) for i, load in out["load"].items()}
    out["load"] = {i: load.tolist() for i, load in out["load"].items()}
    return out


@torch.no_grad()
def greedy(model: LFM2Model, tokenizer, prompt: str, new_tokens: int = 48) -> str:
    ids = tokenizer.encode(prompt).ids  # with bos, as the tokenizer adds it
    cache = model.new_cache()
    logits = model(torch.tensor([ids]), cache=cache).logits
    out = []
    for _ in range(new_tokens):
        token = int(logits[0, -1].argmax())
        if token in (MODEL.eos_token_id, 2):
            break
        out.append(token)
        logits = model(torch.tensor([[token]]), cache=cache).logits
    return tokenizer.decode(out)


def reference_logits(folder: Path, tokenizer) -> dict[str, torch.Tensor]:
    """Logits of the reference implementation (transformers, fp32, eager) for a few fixed inputs."""
    import transformers

    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    ref.set_experts_implementation("eager")
    tensors = {}
    with torch.no_grad():
        for name, text in REFERENCE_TEXTS.items():
            ids = torch.tensor([tokenizer.encode(text).ids])
            tensors[f"{name}.input_ids"] = ids
            tensors[f"{name}.logits"] = ref(ids, use_cache=False).logits.float()
    return tensors


# ------------------------------------------------------------------------------------ the card
def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def model_card(facts: dict) -> str:
    cfg, m, b, u = facts["config"], facts["metrics"], facts["balanced"], facts["unbalanced"]
    k, E = cfg.num_experts_per_tok, cfg.num_experts
    counts = facts["params"]
    moe_layers = sorted(b["max_violation"])
    sizes = facts["sizes"]
    parts = [
        f"# {SHIPPED_MODEL}: a small LFM2-MoE trained by lfm2_edu",
        "",
        "A miniature of LiquidAI/LFM2-8B-A1B with the same structure, trained on a corpus of four kinds "
        "of text so that its routing means something. Rebuild it with `make small-model` "
        "(`python -m lfm2_edu.tiny.build`); every number below is printed by that command.",
        "",
        "## Model",
        "",
        f"- {cfg.num_hidden_layers} layers: {', '.join(cfg.layer_types)}; layers 0-{cfg.num_dense_layers - 1} dense "
        f"(SwiGLU {cfg.intermediate_size}), the rest MoE: {E} experts of width {cfg.moe_intermediate_size}, top-{k}, "
        f"sigmoid router with expert bias.",
        f"- hidden {cfg.hidden_size}, {cfg.num_attention_heads} query heads sharing {cfg.num_key_value_heads} kv heads "
        f"(head dim {cfg.head_dim}), short conv kernel {cfg.conv_L_cache}, vocabulary {cfg.vocab_size}, tied embeddings.",
        f"- {counts.total:,} parameters, {counts.active:,} active per token; weights stored in bf16 "
        f"(expert_bias in fp32).",
        "",
        "## Data",
        "",
        f"Made offline from Python {facts['python']}'s own files and a seeded generator (seed {CORPUS_SEED}); "
        f"5% of the documents of each domain (chosen by a hash of their name) are held out.",
        "",
        table([[d, f"{sizes[d]['train_docs']:,}", f"{sizes[d]['train_chars']:,}", f"{facts['tokens']['train'][d]:,}",
                f"{sizes[d]['valid_docs']:,}", f"{facts['tokens']['valid'][d]:,}"] for d in DOMAINS],
              ["domain", "train docs", "train chars", "train tokens", "valid docs", "valid tokens"]),
        "",
        "prose: the language reference topics of `pydoc_data` and standard-library docstrings; code: "
        "standard-library source with docstrings removed; arithmetic: generated sums, differences and "
        "products, a third as chat turns; data: generated JSON records.",
        "",
        "## Training",
        "",
        f"{facts['steps']} steps of {TRAIN.batch_size} x {TRAIN.seq_len} tokens (the same number from each domain), "
        f"AdamW (lr {TRAIN.lr}, warmup {TRAIN.warmup_steps}, cosine to {TRAIN.min_lr_ratio:g}x, weight decay "
        f"{TRAIN.weight_decay}), expert-bias update rate u = {TRAIN.bias_update_rate}. Two runs of this recipe "
        f"ran side by side on one CPU thread each: with the bias update (shipped) and without it. "
        f"Training time: {facts['train_seconds']['balanced']:.0f} s (shipped run), whole build "
        f"{facts['build_seconds']:.0f} s on {facts['machine']}.",
        "",
        "## Validation loss (nats per token, shipped weights)",
        "",
        table([[d, f"{m['loss'][d]:.3f}", f"{m['unigram_loss'][d]:.3f}", f"{u['loss'][d]:.3f}"] for d in DOMAINS],
              ["domain", "model", "unigram baseline", "run without balancing"]),
        "",
        "## Load balance: MaxVio per MoE layer on the validation set",
        "",
        "MaxVio = (max load - mean load) / mean load; 0 is perfect balance, "
        f"E/k - 1 = {E // k - 1} (the same {k} experts for every token) is the worst a top-{k} router can do.",
        "",
        table([[i, f"{b['max_violation'][i]:.3f}", f"{u['max_violation'][i]:.3f}"] for i in moe_layers],
              ["layer", "with expert-bias balancing (shipped)", "without"]),
        "",
        f"## Specialisation: share of a domain's tokens routed to its most-used expert (uniform: k/E = {k / E:.3f})",
        "",
        table([[i] + [f"{b['top_expert'][d][i][1]:.2f} (e{b['top_expert'][d][i][0]})" for d in DOMAINS]
               for i in moe_layers], ["layer"] + list(DOMAINS)),
        "",
        "## Greedy continuations",
        "",
    ]
    for domain, prompt in PROMPTS.items():
        parts += [f"{domain}, prompt {prompt!r}:", "", "```", prompt + facts["continuations"][domain], "```", ""]
    parts += [
        "## Files",
        "",
        "config.json, model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json (hub "
        "layout, read by lfm2_edu and by transformers); reference_logits.safetensors (transformers "
        f"{facts['transformers']} fp32 logits for fixed inputs); training_log.json (both runs: loss, per-layer "
        "expert loads and biases every 10 steps); metrics.json (the numbers above).",
        "",
    ]
    return "\n".join(parts)


# -------------------------------------------------------------------------------------- main
def build(out_dir: Path, steps: int) -> int:
    t0 = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="tiny-lfm2-moe-build-"))
    try:
        log("1/5 corpus")
        corpus = build_corpus(seed=CORPUS_SEED)
        sizes = corpus.sizes()
        for d in DOMAINS:
            log(f"  {d:>10}: {sizes[d]['train_chars']:>9,} train chars, {sizes[d]['valid_chars']:>7,} valid chars")
        log("2/5 tokenizer")
        tokenizer = train_tokenizer([t for d in DOMAINS for t in corpus.train[d]], MODEL.vocab_size)
        streams = {split: {d: token_stream(tokenizer, getattr(corpus, split)[d]) for d in DOMAINS}
                   for split in ("train", "valid")}
        torch.save(streams, workdir / "streams.pt")
        tokens = {split: {d: len(s) for d, s in streams[split].items()} for split in streams}
        log(f"  train tokens {tokens['train']}")
        log(f"3/5 training, two runs side by side ({steps} steps each)")
        run_both(workdir, steps)
        logs = {name: json.loads((workdir / f"{name}.log.json").read_text()) for name in ("balanced", "unbalanced")}

        log("4/5 evaluation on the validation split (shipped, bf16-rounded weights)")
        counts = torch.bincount(torch.cat(list(streams["train"].values())), minlength=MODEL.vocab_size)
        unigram = (counts + 1).float() / (counts.sum() + MODEL.vocab_size)  # add-one smoothing
        valid = {d: validation_windows(streams["valid"][d], TRAIN.seq_len, VALID_WINDOWS) for d in DOMAINS}
        results, models = {}, {}
        for name in ("balanced", "unbalanced"):
            models[name] = as_shipped(load_model(workdir / name))
            results[name] = evaluate(models[name], valid, unigram)
        continuations = {d: greedy(models["balanced"], tokenizer, p) for d, p in PROMPTS.items()}

        log("5/5 writing the checkpoint")
        stage = workdir / SHIPPED_MODEL
        save_model(models["balanced"].to_dtype(torch.bfloat16), stage)
        save_tokenizer(tokenizer, stage, MODEL.max_position_embeddings)
        (stage / "generation_config.json").write_text(json.dumps(GENERATION, indent=2) + "\n")
        from safetensors.torch import save_file
        import transformers
        save_file(reference_logits(stage, tokenizer), str(stage / "reference_logits.safetensors"),
                  metadata={"transformers": transformers.__version__, "dtype": "float32"})
        (stage / "training_log.json").write_text(json.dumps(logs, separators=(",", ":")))
        machine = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}"
        facts = {"steps": steps, "config": MODEL, "params": count_parameters(MODEL), "sizes": sizes, "tokens": tokens,
                 "metrics": results["balanced"], "balanced": results["balanced"], "unbalanced": results["unbalanced"],
                 "continuations": continuations, "python": python_version(), "machine": machine,
                 "transformers": transformers.__version__,
                 "train_seconds": {n: logs[n]["seconds"] for n in logs}, "build_seconds": time.time() - t0}
        (stage / "metrics.json").write_text(json.dumps(
            {"balanced": results["balanced"], "unbalanced": results["unbalanced"], "continuations": continuations,
             "corpus": sizes, "tokens": tokens, "train_seconds": facts["train_seconds"],
             "build_seconds": facts["build_seconds"], "machine": machine, "python": python_version()}, indent=1))
        card = model_card(facts)
        (stage / "README.md").write_text(card)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), str(out_dir))
        log("")
        log(card)
        return report_goals(facts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report_goals(facts: dict) -> int:
    """Print the issue's goals with what was measured; 1 if any is not met."""
    b, u, k, E = facts["balanced"], facts["unbalanced"], MODEL.num_experts_per_tok, MODEL.num_experts
    worst_b, worst_u = max(b["max_violation"].values()), max(u["max_violation"].values())
    layers = sorted(b["max_violation"])
    specialised = [i for i in layers if max(b["top_expert"][d][i][1] for d in DOMAINS) >= 2 * k / E]
    goals = [
        ("better than the unigram baseline in every domain",
         all(b["loss"][d] < b["unigram_loss"][d] for d in DOMAINS)),
        (f"worst-layer MaxVio {worst_b:.3f} <= 0.5", worst_b <= 0.5),
        (f"worst-layer MaxVio below the run without balancing ({worst_u:.3f})", worst_b < worst_u),
        (f"{len(specialised)} of {len(layers)} MoE layers have a domain whose top expert gets >= 2 k/E = "
         f"{2 * k / E:.3f}", 2 * len(specialised) >= len(layers)),
        (f"build time {facts['build_seconds'] / 60:.1f} min <= 60", facts["build_seconds"] <= 3600),
    ]
    log("goals:")
    for text, ok in goals:
        log(f"  [{'met' if ok else 'NOT MET'}] {text}")
    return 0 if all(ok for _, ok in goals) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR / SHIPPED_MODEL, help="where the checkpoint goes")
    parser.add_argument("--steps", type=int, default=TRAIN.steps, help="training steps per run (a smoke test uses few)")
    parser.add_argument("--train-run", choices=["balanced", "unbalanced"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_run:
        train_run(args.workdir, args.train_run, args.steps)
        return 0
    return build(args.out, args.steps)


if __name__ == "__main__":
    sys.exit(main())
