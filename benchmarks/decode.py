"""Decode speed and cache memory as the context grows: lfm2_edu against transformers.

What it shows. A conv layer's cache is its last L-1 gated inputs, whatever the context, so its
memory and its cost per decoded token stay flat; an attention layer keeps every key and value and
reads them all for each new token, so both grow with the context. The benchmark fills the cache
(a prefill in chunks) to 128, 1024 and 8192 tokens and at each length prints:

- the cache memory per layer type (lfm2_edu's HybridCache, and transformers' cache for comparison),
- the decode speed (greedy, batch 1) of lfm2_edu and of transformers, same checkpoint, same run,
- lfm2_edu's time per decoded token inside the conv mixers and inside the attention mixers.

The checkpoint. Random weights with LFM2-8B-A1B's widths (vocab 65536, hidden 2048, 32 query /
8 kv heads of 64, dense MLP 7168, experts of width 1792, top-4, conv kernel 3) but 6 layers instead
of 24: conv conv attention conv conv attention (the real model has one attention layer in four;
here one in three), layers 0-1 dense, 2-5 MoE, and 8 experts instead of 32. A token reads only its
top-4 experts, so the work per token is that of 32 experts (0.49 B active parameters); the smaller
count shrinks the memory (0.66 B parameters, 2.7 GB in float32), so that both implementations fit
in memory together, on a machine shared with other work, and are timed in alternation: whatever
else runs slows both alike. The weights are written to a temporary folder tensor by tensor.

    python benchmarks/decode.py [--layers 6] [--experts 16] [--contexts 128,1024,8192]
                                [--decode-tokens 16] [--rounds 3] [--dtype float32]
                                [--skip-transformers] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning. On a machine shared with other work, spinning
# threads stall every small op (measured here: 8 -> 1.3 tok/s); set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lfm2_edu import LFM2Config, LFM2Model, load_model  # noqa: E402

CHUNK = 512  # prefill chunk: bounds the (T, S) attention scores and the (T, V) logits


def bench_config(layers: int, experts: int) -> LFM2Config:
    """LFM2-8B-A1B's widths; every third layer is attention, layers 0-1 dense."""
    types = ["full_attention" if i % 3 == 2 else "conv" for i in range(layers)]
    return LFM2Config(num_hidden_layers=layers, layer_types=types, num_dense_layers=min(2, layers),
                      num_experts=experts, max_position_embeddings=16384)


def write_checkpoint(folder: Path, config: LFM2Config, dtype: torch.dtype, shard_bytes: int = 10**9) -> None:
    """Random weights, one tensor at a time, in shards of about 1 GB (never the whole model in memory).
    Linear weights ~ N(0, 1/fan_in) keep activations O(1); norms ~ N(1, 0.1); expert_bias ~ N(0, 0.3)."""
    from safetensors.torch import save_file

    with torch.device("meta"):  # names and shapes only
        shapes = {name: t.shape for name, t in LFM2Model(config).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    shard, size, files, weight_map = {}, 0, [], {}

    def flush():
        nonlocal shard, size
        file = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
        files.append(file)
        shard, size = {}, 0

    for name, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if name.endswith("expert_bias"):
            x = x * 0.3  # stays fp32, as in real checkpoints
        elif "norm" in name:
            x = (1 + 0.1 * x).to(dtype)
        elif len(shape) >= 2:
            x = (x / math.sqrt(shape[-1])).to(dtype)
        else:
            x = (0.1 * x).to(dtype)
        shard["model." + name] = x
        size += x.numel() * x.element_size()
        if size >= shard_bytes:
            flush()
    if shard:
        flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    hub = config.to_hub_dict()
    hub["dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(hub, indent=2))


def tensor_bytes(obj, seen=None) -> int:
    """Bytes of every tensor reachable from obj's attributes, lists and dicts (each counted once)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if obj.data_ptr() in seen:
            return 0
        seen.add(obj.data_ptr())
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


class Runner:
    """One implementation behind the same three calls: prefill, decode steps, cache memory."""

    def __init__(self, name: str, model, config: LFM2Config) -> None:
        self.name, self.model, self.config = name, model, config
        self.cache = model.new_cache() if name == "lfm2_edu" else None
        self.seq_len = 0

    def forward(self, ids: torch.Tensor, last_only: bool) -> torch.Tensor:
        if self.name == "lfm2_edu":
            logits = self.model(ids, cache=self.cache).logits
        else:
            out = self.model(input_ids=ids, cache=self.cache, use_cache=True, logits_to_keep=1 if last_only else 0)
            self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
            logits = out.logits
        self.seq_len += ids.shape[1]
        return logits[:, -1]  # (B, V)

    def prefill_to(self, tokens: torch.Tensor, length: int) -> torch.Tensor:
        logits = None
        while self.seq_len < length:
            end = min(length, self.seq_len + CHUNK - self.seq_len % CHUNK)
            logits = self.forward(tokens[:, self.seq_len:end], last_only=True)
        return logits

    def decode(self, logits: torch.Tensor, n: int) -> tuple[list[int], float, torch.Tensor]:
        """n greedy steps from the given last logits; (tokens, seconds, last logits)."""
        out = []
        start = time.perf_counter()
        for _ in range(n):
            nxt = logits.argmax(-1, keepdim=True)  # (1, 1)
            out.append(int(nxt))
            logits = self.forward(nxt, last_only=True)
        return out, time.perf_counter() - start, logits

    def cache_bytes(self) -> dict[str, int]:
        if self.name == "lfm2_edu":
            return self.cache.memory_bytes()
        per_type = {"conv": 0, "full_attention": 0}
        for i, layer in enumerate(self.cache.layers):
            per_type[self.config.layer_types[i]] += tensor_bytes(layer)
        return per_type


def mixer_times(model: LFM2Model) -> tuple[dict[str, float], list]:
    """Hooks that add up the time spent in the conv and the attention mixers of lfm2_edu."""
    totals = {"conv": 0.0, "full_attention": 0.0}
    handles = []
    for layer in model.layers:
        mixer, kind = (layer.self_attn, "full_attention") if layer.is_attention else (layer.conv, "conv")
        starts = []
        handles.append(mixer.register_forward_pre_hook(lambda m, a, s=starts: s.append(time.perf_counter())))
        handles.append(mixer.register_forward_hook(
            lambda m, a, o, s=starts, k=kind: totals.__setitem__(k, totals[k] + time.perf_counter() - s.pop())))
    return totals, handles


def load(name: str, folder: Path, dtype) -> tuple[object, str]:
    t0 = time.perf_counter()
    if name == "lfm2_edu":
        model, impl = load_model(folder, dtype=dtype), "written-out attention, a loop over the chosen experts"
    else:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        impl = (f"attention={model.config._attn_implementation}, "
                f"experts={getattr(model.config, '_experts_implementation', '?')} (its defaults)")
    print(f"  {name}: loaded in {time.perf_counter() - t0:.1f} s ({impl})", flush=True)
    return model, impl


@torch.inference_mode()
def measure(runners: dict[str, Runner], contexts: list[int], n: int, rounds: int, tokens: torch.Tensor) -> dict:
    """At each context: prefill every runner, then `rounds` rounds of n greedy tokens in alternation
    (so that a busy machine slows both alike); the best round counts."""
    rows = {name: [] for name in runners}
    logits = {}
    for ctx in contexts:
        for name, runner in runners.items():
            t0 = time.perf_counter()
            logits[name] = runner.prefill_to(tokens, ctx)
            print(f"  {name}: prefill to {ctx:>5} tokens in {time.perf_counter() - t0:6.1f} s", flush=True)
            rows[name].append({"context": ctx, "memory": runner.cache_bytes(), "tok_s": 0.0, "tokens": None})
            _, _, logits[name] = runner.decode(logits[name], 2)  # warm-up, not timed
        for _ in range(rounds):
            for name, runner in runners.items():
                out, seconds, logits[name] = runner.decode(logits[name], n)
                row = rows[name][-1]
                row["tok_s"] = max(row["tok_s"], n / seconds)
                row["tokens"] = row["tokens"] or out  # the first round's, to compare
        # Where lfm2_edu's time goes, in one more pass with timing hooks on its mixers; the others
        # decode the same steps untimed, so that every cache keeps holding the same tokens.
        for name, runner in runners.items():
            totals, handles = mixer_times(runner.model) if name == "lfm2_edu" else ({}, [])
            _, seconds, logits[name] = runner.decode(logits[name], n)
            for h in handles:
                h.remove()
            rows[name][-1].update(mixer_ms={k: 1e3 * v / n for k, v in totals.items()}, step_ms=1e3 * seconds / n)
        print("  " + ", ".join(f"{name} {rows[name][-1]['tok_s']:.2f} tok/s" for name in runners)
              + f" at context {ctx}", flush=True)
    return rows


def fmt_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds; the best counts")
    parser.add_argument("--contexts", default="128,1024,8192")
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--checkpoint", type=Path, help="reuse (or keep) the random checkpoint here")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    dtype = getattr(torch, args.dtype)
    config = bench_config(args.layers, args.experts)
    n = args.decode_tokens

    from lfm2_edu import count_parameters

    counts = count_parameters(config)
    n_conv, n_attn = len(config.conv_layers), len(config.attention_layers)
    print(f"Checkpoint: LFM2-8B-A1B widths, {config.num_hidden_layers} layers {config.layer_types}, "
          f"dense layers 0-{config.num_dense_layers - 1}, {config.num_experts} experts "
          f"top-{config.num_experts_per_tok}; "
          f"{counts.total / 1e9:.2f} B parameters ({counts.active / 1e9:.2f} B active), {args.dtype}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}; batch 1, greedy, prefill chunks of {CHUNK}")

    tmp = None
    folder = args.checkpoint
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` removes the temporary folder
    try:
        if folder is None or not (folder / "config.json").is_file():
            if folder is None:
                tmp = Path(tempfile.mkdtemp(prefix="lfm2-decode-bench-"))
                folder = tmp / "ckpt"
            t0 = time.perf_counter()
            write_checkpoint(folder, config, dtype)
            print(f"  wrote {folder} in {time.perf_counter() - t0:.1f} s", flush=True)
        tokens = torch.randint(8, config.vocab_size, (1, max(contexts) + 8),
                               generator=torch.Generator().manual_seed(1))
        names = ["lfm2_edu"] + ([] if args.skip_transformers else ["transformers"])
        runners, impls = {}, {}
        for name in names:
            model, impls[name] = load(name, folder, dtype)
            runners[name] = Runner(name, model, config)
        results = measure(runners, contexts, n, args.rounds, tokens)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    ours = results["lfm2_edu"]
    theirs = results.get("transformers")
    print(f"\nCache memory after the context ({n_conv} conv layers, {n_attn} attention layers, batch 1, {args.dtype})")
    head = f"{'context':>8} │ {'conv: all':>10} {'per layer':>10} │ {'attention: all':>14} {'per layer':>10}"
    if theirs:
        head += f" │ {'transformers conv':>17} {'attention':>10}"
    print(head)
    for i, r in enumerate(ours):
        m = r["memory"]
        line = (f"{r['context']:>8} │ {fmt_bytes(m['conv']):>10} {fmt_bytes(m['conv'] // max(n_conv, 1)):>10} │ "
                f"{fmt_bytes(m['full_attention']):>14} {fmt_bytes(m['full_attention'] // max(n_attn, 1)):>10}")
        if theirs:
            t = theirs[i]["memory"]
            line += f" │ {fmt_bytes(t['conv']):>17} {fmt_bytes(t['full_attention']):>10}"
        print(line)

    print(f"\nDecode (greedy, best of {args.rounds} alternating rounds of {n} tokens after the context; "
          f"lfm2_edu's time per token split by mixer type)")
    head = f"{'context':>8} │ {'lfm2_edu tok/s':>14}"
    if theirs:
        head += f" {'transformers tok/s':>18} {'ratio':>6} {'same tokens':>11}"
    head += f" │ {'conv mixers ms/tok':>18} {'attention mixers ms/tok':>23} {'whole step ms':>13}"
    print(head)
    for i, r in enumerate(ours):
        line = f"{r['context']:>8} │ {r['tok_s']:>14.2f}"
        if theirs:
            t = theirs[i]
            line += (f" {t['tok_s']:>18.2f} {r['tok_s'] / t['tok_s']:>6.2f} "
                     f"{'yes' if r['tokens'] == t['tokens'] else 'no':>11}")
        line += (f" │ {r['mixer_ms']['conv']:>18.2f} {r['mixer_ms']['full_attention']:>23.2f} "
                 f"{r['step_ms']:>13.1f}")
        print(line)
    if theirs:
        print(f"transformers: {impls['transformers']}; lfm2_edu: {impls['lfm2_edu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
