"""Decoding LFM2-8B-A1B on one CUDA GPU: the fast path (static shapes, CUDA graph) against
transformers' grouped_mm and batched_mm experts, in the same run.

NOT YET RUN ON A GPU: written and checked on CPU-only machines (its CPU-testable pieces, the
static-shape decode step, are tested there by tests/test_fast.py), so its first GPU run is also
its first test. It exits with a clear message where torch sees no CUDA device.

What it measures. Random bf16 weights with LFM2-8B-A1B's exact shapes are made directly on the
GPU (no checkpoint to write or read), once for lfm2_edu and once for transformers (the two hold
different random weights: only speeds are compared between them; the fast path's outputs are
checked against the readable path on the same weights). Then, timed in alternating rounds so that
clock changes hit every implementation alike (CUDA-synchronised, best round):

- prefill of 512 tokens (ms) and decode at batch 1 (greedy tok/s, after a 64-token prompt) for:
  transformers with experts=grouped_mm, the same with experts=batched_mm, lfm2_edu's readable
  path, and the fast path three ways: dynamic (views of the chosen experts, a host sync per MoE
  layer), static shapes without a graph, static shapes with a CUDA graph;
- the GPU's bandwidth: a device-to-device copy and a bf16 matrix-vector product over 1 GB of
  weights, and from them the ceiling tok/s = bandwidth / bytes read per token (the active weights,
  count_parameters x 2 B), and each implementation's share of it;
- the fast path's logits and greedy tokens against the readable path's, on the same weights.

    python benchmarks/decode_gpu.py [--layers 24] [--decode-tokens 64] [--rounds 3] [--skip-readable]

--layers N keeps LFM2-8B-A1B's widths with fewer layers (a quick smoke run); the default is the
full model (16.7 GB per copy; both copies fit on an 80 GB GPU).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lfm2_edu import LFM2Config, LFM2Model, count_parameters  # noqa: E402
from lfm2_edu.fast import FastLFM2  # noqa: E402

GB = 1e9
PROMPT_LEN = 64


def full_shape_config(layers: int) -> LFM2Config:
    """LFM2-8B-A1B (the config defaults), or its widths over fewer layers (attention every fourth)."""
    if layers == 24:
        return LFM2Config()
    types = ["full_attention" if i % 4 == 2 else "conv" for i in range(layers)]
    return LFM2Config(num_hidden_layers=layers, layer_types=types, num_dense_layers=min(2, layers))


@torch.no_grad()
def random_fill(named_tensors, generator) -> None:
    """Linear weights ~ N(0, 1/fan_in) (activations stay O(1)), norms ~ N(1, 0.1), expert_bias ~ N(0, 0.3)."""
    for name, t in named_tensors:
        if name.endswith("expert_bias"):
            t.normal_(0.0, 0.3, generator=generator)
        elif "norm" in name:
            t.normal_(1.0, 0.1, generator=generator)
        elif t.dim() >= 2:
            t.normal_(0.0, t.shape[-1] ** -0.5, generator=generator)
        elif t.is_floating_point():
            t.normal_(0.0, 0.1, generator=generator)


def ours(config: LFM2Config, device: str) -> LFM2Model:
    with torch.device("meta"):
        model = LFM2Model(config).to_dtype(torch.bfloat16)
    model = model.to_empty(device=device)
    model.rope.reset_inv_freq(device)
    random_fill(list(model.named_parameters()) + list(model.named_buffers()), torch.Generator(device).manual_seed(0))
    return model.requires_grad_(False).eval()


def theirs(config: LFM2Config, device: str):
    import transformers

    ref_config = transformers.Lfm2MoeConfig(**config.to_hub_dict())
    with torch.device(device):  # built on the GPU, its buffers (RoPE, expert_bias) computed there
        model = transformers.AutoModelForCausalLM.from_config(ref_config, dtype=torch.bfloat16)
    random_fill(list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if "expert_bias" in n],
                torch.Generator(device).manual_seed(1))
    return model.requires_grad_(False).eval()


class Runner:
    """prefill(ids) -> last logits (1, V); step(token) -> last logits; over its own cache."""

    def __init__(self, name: str, model, experts: str | None = None) -> None:
        self.name, self.model, self.experts = name, model, experts
        self.cache = None

    def prefill(self, ids):
        if self.experts:  # transformers
            self.model.set_experts_implementation(self.experts)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        else:
            fast = isinstance(self.model, FastLFM2)
            self.cache = self.model.new_cache(1, ids.shape[1] + 1024) if fast else self.model.new_cache()
            out = self.model(ids, cache=self.cache)
        return out.logits[:, -1]

    def step(self, token):
        if self.experts:
            out = self.model(input_ids=token, cache=self.cache, use_cache=True, logits_to_keep=1)
            self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        else:
            out = self.model(token, cache=self.cache)
        return out.logits[:, -1]


def synced(fn):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    value = fn()
    sync()
    return value, time.perf_counter() - start


def decode(runner: Runner, prompt, n: int) -> tuple[list[int], float]:
    logits = runner.prefill(prompt)
    for _ in range(3):  # warm-up (and the CUDA graph's capture)
        logits = runner.step(logits.argmax(-1, keepdim=True))
    tokens = []

    def loop():
        nonlocal logits
        for _ in range(n):
            token = logits.argmax(-1, keepdim=True)  # (1, 1)
            tokens.append(token)
            logits = runner.step(token)

    _, seconds = synced(loop)
    return [int(t) for t in tokens], n / seconds


def bandwidth(device: str) -> dict[str, float]:
    """GB/s of a device copy (read + write) and of a bf16 matrix-vector product over 1 GB of weights."""
    src = torch.zeros(2**29, dtype=torch.bfloat16, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    w = src.view(-1, 2048)  # (262144, 2048)
    x = torch.randn(1, 2048, dtype=torch.bfloat16, device=device)
    out = {}
    for name, fn, nbytes in (("copy", lambda: dst.copy_(src), 2 * src.numel() * 2),
                             ("matvec", lambda: x @ w.T, w.numel() * 2)):
        fn()
        best = min(synced(lambda: [fn() for _ in range(10)])[1] for _ in range(3))
        out[name] = 10 * nbytes / best / GB
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-readable", action="store_true", help="skip the readable path (slow on a GPU)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--device", default="cuda", help="cuda; cpu runs everything but the CUDA graph (a smoke test)")
    args = parser.parse_args()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("decode_gpu: expected a CUDA device, found none (torch.cuda.is_available() is False); nothing measured")
        return 2
    torch.set_grad_enabled(False)
    config = full_shape_config(args.layers)
    active_bytes = 2 * count_parameters(config).active
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        print(f"GPU: {props.name}, {props.total_memory / GB:.0f} GB, capability {props.major}.{props.minor}; "
              f"torch {torch.__version__}")
    else:
        print(f"device {device}: a smoke run of everything but the CUDA graph; torch {torch.__version__}")
    print(f"model: LFM2-8B-A1B widths, {config.num_hidden_layers} layers, random bf16 weights; "
          f"a decode step reads {active_bytes / GB:.3f} GB (active weights)")
    bw = bandwidth(device)
    print(f"bandwidth: copy {bw['copy']:.0f} GB/s, bf16 matvec over 1 GB {bw['matvec']:.0f} GB/s -> ceiling "
          f"{bw['matvec'] * GB / active_bytes:.0f} tok/s")

    model = ours(config, device)
    runners = {}
    if not args.skip_transformers:
        tf = theirs(config, device)
        runners["transformers grouped_mm"] = Runner("tf-grouped", tf, "grouped_mm")
        runners["transformers batched_mm"] = Runner("tf-batched", tf, "batched_mm")
    if not args.skip_readable:
        runners["lfm2_edu readable"] = Runner("readable", model)
    runners["fast dynamic (views)"] = Runner("dynamic", FastLFM2(model, static=False))
    # static=True stacks the experts and points the model's expert weights at views of the stack:
    # the readable and dynamic runners above read the same (stacked) weights from here on.
    static = FastLFM2(model, static=True, cuda_graph=False)
    runners["fast static"] = Runner("static", static)
    if device.startswith("cuda"):
        graph = copy.copy(static)  # the same stacked weights (a second FastLFM2 would stack them again)
        graph.cuda_graph = True
        runners["fast static + CUDA graph"] = Runner("graph", graph)
    best_fast = "fast static + CUDA graph" if device.startswith("cuda") else "fast static"

    g = torch.Generator().manual_seed(2)
    prompt512 = torch.randint(8, config.vocab_size, (1, 512), generator=g).to(device)
    prompt = prompt512[:, :PROMPT_LEN]
    best = {name: {"prefill512_ms": float("inf"), "tok_s": 0.0} for name in runners}
    tokens = {}
    for r in range(args.rounds):
        for name, runner in runners.items():
            _, seconds = synced(lambda: runner.prefill(prompt512))
            best[name]["prefill512_ms"] = min(best[name]["prefill512_ms"], 1e3 * seconds)
            toks, tok_s = decode(runner, prompt, args.decode_tokens)
            best[name]["tok_s"] = max(best[name]["tok_s"], tok_s)
            tokens.setdefault(name, toks)
        print(f"  round {r + 1}: " + ", ".join(f"{n} {b['tok_s']:.0f} tok/s" for n, b in best.items()), flush=True)

    print(f"\n{'implementation':<26} {'prefill 512 ms':>15} {'decode tok/s':>13} {'GB/s':>7} {'ceiling share':>14}")
    for name, b in best.items():
        gbps = b["tok_s"] * active_bytes / GB
        print(f"{name:<26} {b['prefill512_ms']:>15.1f} {b['tok_s']:>13.1f} {gbps:>7.0f} {gbps / bw['matvec']:>13.0%}")
    for base in ("transformers grouped_mm", "transformers batched_mm"):
        if base in best:
            print(f"{best_fast} vs {base}: decode {best[best_fast]['tok_s'] / best[base]['tok_s']:.2f}x, "
                  f"prefill 512 {best[base]['prefill512_ms'] / best[best_fast]['prefill512_ms']:.2f}x")

    # The same weights: the fast path against the readable one.
    ids = prompt512[:, :32]
    reference = model(ids).logits.float()
    for name in ("fast dynamic (views)", "fast static"):
        diff = (runners[name].model(ids, logits="all").logits.float() - reference).abs().max().item()
        print(f"{name}: max |logit difference| to the readable path {diff:.3f} over 32 positions (bf16)")
    if "lfm2_edu readable" in tokens:
        ref = tokens["lfm2_edu readable"]
        for name in runners:
            if name.startswith("fast"):
                same = next((i for i, (a, b) in enumerate(zip(tokens[name], ref)) if a != b), None)
                print(f"{name}: greedy tokens " + (f"all {len(ref)} as the readable path's" if same is None
                                                   else f"as the readable path's up to step {same}"))
    if device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / GB:.1f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
