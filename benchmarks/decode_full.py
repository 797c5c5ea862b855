"""Decoding LFM2-8B-A1B against the memory-bandwidth ceiling: transformers, the readable path, the
fast path in bf16 and in int8, in one run, each in its own process.

What it measures. A checkpoint with LFM2-8B-A1B's exact shapes (random bf16 weights, 16.7 GB,
written once by benchmarks/load_memory.py's writer and reused) is loaded by each implementation in
a fresh process, one after the other, so that only one copy of the weights is ever in memory. Each
reports: the load time (int8: with the quantisation), a first 64-token prefill (it pages the
memory-mapped weights in), prefill times at 64 and 512 tokens (best of --rounds, a fresh cache
each), the decode speed at batch 1 (greedy, after a 64-token prompt, best of --rounds rounds of
--decode-tokens), and its peak resident memory (VmHWM) against the bytes of the weights it holds.

The ceiling. A decode step reads every weight it uses once: the active weights (the embedding
row, all mixers, the dense MLPs, the routers, k experts per MoE layer, the head), about 3.1 GB in
bf16 (count_parameters' active count x 2 bytes). A child measures this machine's bandwidth for
that access pattern (F.linear of one vector over expert-sized weight views chosen at random from
2 GB of weights, and the same with int8 weights and _weight_int8pack_mm), so the ceiling is

    tok/s <= bandwidth / bytes read per token

and each implementation's share of it is its tok/s x its bytes per token / the bandwidth.
int8's cost is measured apart: top-1 agreement and KL against bf16 on held-out text of the shipped
model (its shipped held-out set, as the chapters read it), and on the real LFM2-8B-A1B where $LFM2_8B_A1B_PATH
names its folder.

    python benchmarks/decode_full.py [--checkpoint DIR] [--only NAME,...] [--decode-tokens 32]
                                     [--rounds 3] [--transformers-experts grouped_mm] [--skip-quality]

Run it on an otherwise idle machine if you can: the figures are ratios within one run, and the
load average is printed at the start and the end so that a busy machine shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (as in benchmarks/decode.py): on a shared machine,
# spinning threads stall every small op. Children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT))

import load_memory  # noqa: E402  (the random checkpoint's writer, memory probes)

IMPLEMENTATIONS = ("transformers", "readable", "fast-bf16", "fast-int8")
RESULT = "RESULT "
GB = 1e9
PROMPT_LEN = 64  # the decode prompt
GOALS = {"decode_vs_transformers": 1.2, "ceiling_share": 0.85, "int8_vs_transformers": 2.0,
         "prefill512_vs_transformers": 1.5, "rss_over_weights": 1.05}


# ------------------------------------------------------------------------------- child: ceiling
def measure_ceiling(rounds: int) -> dict:
    """GB/s of matrix-vector products over expert-sized weight views, bf16 and int8, like a decode step."""
    import torch
    import torch.nn.functional as F

    from lfm2_edu import LFM2Config

    cfg = LFM2Config()  # LFM2-8B-A1B
    E, I, H, k = cfg.num_experts, cfg.moe_intermediate_size, cfg.hidden_size, cfg.num_experts_per_tok
    g = torch.Generator().manual_seed(0)
    out = {}
    for kind, layers in (("bf16", 3), ("int8", 6)):  # 2.1 GB of weights each: far beyond any cache
        if kind == "bf16":
            w1, w3 = (torch.empty(layers, E, I, H, dtype=torch.bfloat16).uniform_(-0.02, 0.02, generator=g)
                      for _ in range(2))
            w2 = torch.empty(layers, E, H, I, dtype=torch.bfloat16).uniform_(-0.02, 0.02, generator=g)
            mv = lambda x, w: F.linear(x, w)  # noqa: E731
        else:
            w1, w3 = (torch.randint(-127, 128, (layers, E, I, H), dtype=torch.int8, generator=g) for _ in range(2))
            w2 = torch.randint(-127, 128, (layers, E, H, I), dtype=torch.int8, generator=g)
            scale_i, scale_h = torch.full((I,), 1e-3, dtype=torch.bfloat16), torch.full((H,), 1e-3, dtype=torch.bfloat16)
            mv = lambda x, w: torch.ops.aten._weight_int8pack_mm(x, w, scale_i if w.shape[0] == I else scale_h)  # noqa: E731
        x = torch.randn(1, H, generator=g).to(torch.bfloat16)
        per_step = layers * k * 3 * I * H * w1.element_size()
        steps = max(8, int(6e9 // per_step))  # about 6 GB per round
        chosen = torch.randint(0, E, (rounds + 1, steps, layers, k), generator=g).tolist()
        best = 0.0
        for r in range(rounds + 1):  # round 0 warms up
            start = time.perf_counter()
            for step in chosen[r]:
                for layer, experts in enumerate(step):
                    for e in experts:  # one expert: gate and up, then down, on views of its weights
                        h = mv(x, w1[layer, e]) * mv(x, w3[layer, e])
                        mv(h, w2[layer, e])
            if r:
                best = max(best, steps * per_step / (time.perf_counter() - start))
        out[f"{kind}_GBps"] = best / GB
        del w1, w2, w3
    out["threads"] = torch.get_num_threads()
    return out


# -------------------------------------------------------------------------- child: one implementation
class Runner:
    """One implementation behind two calls: prefill(ids) and step(token), each -> last logits (1, V)."""

    def __init__(self, name: str, folder: str, experts: str) -> None:
        import torch

        from lfm2_edu import load_model
        from lfm2_edu.fast import FastLFM2

        self.name, self.info = name, {}
        start = time.perf_counter()
        if name == "transformers":
            import transformers

            self.model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
            if experts:
                self.model.set_experts_implementation(experts)
            self.info["impl"] = (f"attention={self.model.config._attn_implementation}, "
                                 f"experts={self.model.config._experts_implementation}")
        else:
            model = load_model(folder, dtype=torch.bfloat16)
            self.info["load_only_s"] = time.perf_counter() - start
            self.model = model if name == "readable" else FastLFM2(model, int8=name == "fast-int8")
            self.info["impl"] = repr(self.model) if name != "readable" else "written-out attention, experts by torch.where"
            if name != "readable":
                self.info["weight_bytes"] = self.model.weight_bytes()
                self.info["bytes_per_token"] = self.model.bytes_per_token()
        self.info["load_s"] = time.perf_counter() - start
        self.cache = None

    def prefill(self, ids):
        if self.name == "transformers":
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        else:
            self.cache = (self.model.new_cache() if self.name == "readable"
                          else self.model.new_cache(1, ids.shape[1] + 512))
            out = self.model(ids, cache=self.cache)
        return out.logits[:, -1]  # (1, V)

    def step(self, token):
        if self.name == "transformers":
            out = self.model(input_ids=token, cache=self.cache, use_cache=True, logits_to_keep=1)
            self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        else:
            out = self.model(token, cache=self.cache)
        return out.logits[:, -1]


def measure_implementation(name: str, folder: str, rounds: int, n: int, experts: str) -> dict:
    import torch

    from lfm2_edu import LFM2Config

    torch.set_grad_enabled(False)
    config = LFM2Config.from_file(Path(folder) / "config.json")
    prompt = torch.randint(8, config.vocab_size, (1, 512), generator=torch.Generator().manual_seed(1))
    run = Runner(name, folder, experts)
    r = dict(run.info)

    def timed(fn):
        start = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - start

    _, r["first_prefill64_s"] = timed(lambda: run.prefill(prompt[:, :PROMPT_LEN]))  # pages the weights in
    r["prefill64_s"] = min(timed(lambda: run.prefill(prompt[:, :PROMPT_LEN]))[1] for _ in range(rounds))
    r["prefill512_s"] = min(timed(lambda: run.prefill(prompt))[1] for _ in range(max(1, rounds - 1)))

    logits = run.prefill(prompt[:, :PROMPT_LEN])
    tokens, margins, best = [], [], 0.0
    for r_i in range(rounds + 1):  # round 0: two warm-up steps
        steps = 2 if r_i == 0 else n
        start = time.perf_counter()
        for _ in range(steps):
            token = logits.argmax(-1, keepdim=True)  # (1, 1) greedy
            tokens.append(int(token))
            if r_i < 2:  # the steps compared (not timed: round 1 pays for it, and best-of-rounds drops it)
                top2 = logits.float().topk(2, dim=-1).values[0]
                margins.append(float(top2[0] - top2[1]))
            logits = run.step(token)
        if r_i:
            best = max(best, steps / (time.perf_counter() - start))
    r["decode_tok_s"] = best
    r["tokens"] = tokens[:2 + n]  # the warm-up steps and the first timed round
    r["margins"] = margins[:2 + n]  # top-2 logit margin of each of those steps
    r["peak_rss"] = load_memory.peak_rss_bytes()
    r["threads"] = torch.get_num_threads()
    return r


# ---------------------------------------------------------------------------- child: int8 quality
def heldout_windows(source: str, per_domain: int) -> dict:
    """{domain: (N, T+1) token windows} of held-out text for a checkpoint, as the chapters read it
    (routing.held_out_windows: the shipped held-out set for the shipped tokenizer, else the
    corpus's held-out split), at most `per_domain` per domain."""
    from lfm2_edu import load_tokenizer, resolve_checkpoint, routing

    windows, _ = routing.held_out_windows(resolve_checkpoint(source), load_tokenizer(source), max_windows=per_domain)
    return {d: w[:per_domain] for d, w in windows.items()}


def measure_quality(windows_per_domain: int) -> dict:
    """int8 against bf16 (and bf16 against fp32, the floor set by bf16's own rounding), per domain."""
    import torch

    from lfm2_edu import load_model
    from lfm2_edu.fast import FastLFM2
    from lfm2_edu.quant import compare_logits

    torch.set_grad_enabled(False)
    out = {}
    start = time.perf_counter()
    windows = heldout_windows("tiny-lfm2-moe", windows_per_domain)
    out["windows_s"] = time.perf_counter() - start
    fp32 = load_model("tiny-lfm2-moe")
    bf16 = FastLFM2(load_model("tiny-lfm2-moe", dtype=torch.bfloat16))
    int8 = FastLFM2(bf16.model, int8=True)
    exact = lambda ids: fp32(ids).logits  # noqa: E731
    rows = {}
    for domain, w in windows.items():
        rows[domain] = {"int8_vs_bf16": vars(compare_logits(bf16.all_logits, int8.all_logits, w)),
                        "bf16_vs_fp32": vars(compare_logits(exact, bf16.all_logits, w)),
                        "int8_vs_fp32": vars(compare_logits(exact, int8.all_logits, w))}
    out["shipped"] = rows
    out["shipped_bytes"] = {"bf16": bf16.weight_bytes(), "int8": int8.weight_bytes()}

    real = os.environ.get("LFM2_8B_A1B_PATH")
    if real and (Path(real) / "config.json").is_file():
        model = load_model(real, dtype=torch.bfloat16)
        text = heldout_windows(real, max(1, windows_per_domain // 4))
        bf16 = FastLFM2(model)
        int8 = FastLFM2(model, int8=True)
        out["real"] = {d: vars(compare_logits(bf16.all_logits, int8.all_logits, w, batch_size=1))
                       for d, w in text.items()}
    else:
        out["real"] = "not measured: set LFM2_8B_A1B_PATH to the folder of the real checkpoint"
    return out


# -------------------------------------------------------------------------------- the parent side
def run_child(*args: str) -> tuple[dict | None, str]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):]), ""
    why = (f"killed by signal {-proc.returncode}" + (" (SIGKILL: most likely out of memory)" if proc.returncode == -9
                                                     else "")) if proc.returncode < 0 else f"exit code {proc.returncode}"
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
    return None, f"{why}\n{tail}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def print_results(results: dict, ceiling: dict | None, bf16_bytes: int, weight_bytes: int) -> None:
    head = (f"{'implementation':<14} {'load s':>7} {'1st 64 s':>9} {'prefill 64 s':>13} {'prefill 512 s':>14} "
            f"{'decode tok/s':>13} {'peak RSS GB':>12} {'weights GB':>11} {'RSS/weights':>12} "
            f"{'GB/token':>9} {'GB/s':>6} {'ceiling share':>14}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        held = r.get("weight_bytes", weight_bytes)
        per_token = r.get("bytes_per_token", bf16_bytes)
        gbps = r["decode_tok_s"] * per_token / GB
        kind = "int8" if name == "fast-int8" else "bf16"
        share = f"{gbps / ceiling[f'{kind}_GBps']:>13.0%}" + ("*" if kind == "int8" else " ") if ceiling else "?"
        print(f"{name:<14} {r['load_s']:>7.1f} {r['first_prefill64_s']:>9.2f} {r['prefill64_s']:>13.2f} "
              f"{r['prefill512_s']:>14.2f} {r['decode_tok_s']:>13.2f} {r['peak_rss'] / GB:>12.2f} {held / GB:>11.2f} "
              f"{r['peak_rss'] / held:>11.3f}x {per_token / GB:>9.3f} {gbps:>6.1f} {share:>14}")
    if ceiling:
        print("* share of the int8 matrix-vector bandwidth; the others of the bf16 one")


def print_goals(results: dict, ceiling: dict | None, bf16_bytes: int, weight_bytes: int) -> None:
    def line(goal: str, value: float | None, target: float, higher: bool = True, fmt: str = "{:.2f}x") -> None:
        if value is None:
            print(f"  {goal}: not measured")
            return
        met = value >= target if higher else value <= target
        print(f"  {goal}: {'met' if met else 'NOT MET'} ({fmt.format(value)}, goal {'>=' if higher else '<='} "
              f"{fmt.format(target)})")

    tf, fast, int8 = results.get("transformers"), results.get("fast-bf16"), results.get("fast-int8")
    print("goals (ratios from this run):")
    line("fast bf16 decode vs transformers", fast and tf and fast["decode_tok_s"] / tf["decode_tok_s"],
         GOALS["decode_vs_transformers"])
    share = fast and ceiling and fast["decode_tok_s"] * fast.get("bytes_per_token", bf16_bytes) / GB / ceiling["bf16_GBps"]
    line("fast bf16 decode, share of the measured bf16 ceiling", share, GOALS["ceiling_share"], fmt="{:.0%}")
    line("fast int8 decode vs transformers bf16", int8 and tf and int8["decode_tok_s"] / tf["decode_tok_s"],
         GOALS["int8_vs_transformers"])
    line("fast bf16 prefill of 512 tokens, speed-up over transformers",
         fast and tf and tf["prefill512_s"] / fast["prefill512_s"], GOALS["prefill512_vs_transformers"])
    for name in ("readable", "fast-bf16", "fast-int8"):
        if name in results:
            r = results[name]
            line(f"{name} peak RSS / bytes of the weights it holds", r["peak_rss"] / r.get("weight_bytes", weight_bytes),
                 GOALS["rss_over_weights"], higher=False, fmt="{:.3f}x")


def print_tokens(results: dict) -> None:
    """Greedy agreement of every pair of implementations, and how close the first disagreement was
    to a tie (its top-2 logit margin in each): random weights give many near-ties, and bf16 backends
    round differently, so a token that flips where the margin is within bf16's rounding says
    nothing about correctness (the tests compare the paths where it does)."""
    names = list(results)
    if len(names) < 2:
        return
    print(f"greedy tokens after the {PROMPT_LEN}-token prompt, {len(results[names[0]]['tokens'])} steps, "
          f"pair by pair:")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ta, tb = results[a]["tokens"], results[b]["tokens"]
            step = next((j for j, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
            if step is None:
                print(f"  {a} and {b}: all {min(len(ta), len(tb))} the same")
                continue
            margins = [results[n].get("margins", [])[step:step + 1] for n in (a, b)]
            shown = ", ".join(f"{n} {m[0]:.3f}" for n, m in zip((a, b), margins) if m)
            print(f"  {a} and {b}: the same for {step} steps, then differ (top-2 logit margin there: {shown})")


def print_quality(q: dict) -> None:
    print(f"int8 quality: the shipped model (tiny-lfm2-moe), held-out validation windows of its corpus "
          f"(built in {q['windows_s']:.0f} s); weights {q['shipped_bytes']['bf16'] / 1e6:.1f} MB bf16, "
          f"{q['shipped_bytes']['int8'] / 1e6:.1f} MB int8")
    print(f"  {'domain':<11} {'compared':<13} {'positions':>9} {'top-1 agree':>12} {'KL mean':>9} {'KL max':>9}")
    for domain, rows in q["shipped"].items():
        for what, c in rows.items():
            print(f"  {domain:<11} {what.replace('_vs_', ' vs '):<13} {c['positions']:>9} "
                  f"{100 * c['top1_agreement']:>11.2f}% {c['kl_mean']:>9.2e} {c['kl_max']:>9.2e}")
    if isinstance(q["real"], str):
        print(f"  real LFM2-8B-A1B: {q['real']}")
    else:
        for domain, c in q["real"].items():
            print(f"  real LFM2-8B-A1B {domain}: int8 vs bf16 over {c['positions']} positions: top-1 "
                  f"{100 * c['top1_agreement']:.2f}%, KL mean {c['kl_mean']:.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=load_memory.DEFAULT_CHECKPOINT,
                        help="folder of the random full-shape checkpoint (written if absent)")
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS), help="implementations to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--transformers-experts", default="grouped_mm",
                        help="transformers' experts implementation (grouped_mm, batched_mm, eager; '' = its default)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--quality-windows", type=int, default=8, help="held-out windows per domain")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        task, *rest = args.child
        if task == "ceiling":
            result = measure_ceiling(args.rounds)
        elif task == "quality":
            result = measure_quality(args.quality_windows)
        else:
            result = measure_implementation(task, rest[0], args.rounds, args.decode_tokens, args.transformers_experts)
        print(RESULT + json.dumps(result), flush=True)
        return 0

    chosen = [n for n in args.only.split(",") if n]
    unknown = [n for n in chosen if n not in IMPLEMENTATIONS]
    if unknown:
        parser.error(f"--only: expected names from {list(IMPLEMENTATIONS)}, found {unknown}")
    print(load_memory.machine_line())
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; load average at the start: {load_average()}")
    folder = args.checkpoint.expanduser().resolve()
    load_memory.ensure_checkpoint(folder)
    weight_bytes = load_memory.checkpoint_bytes(folder)

    from lfm2_edu import LFM2Config, count_parameters  # light: no weights

    config = LFM2Config.from_file(folder / "config.json")
    bf16_bytes = 2 * count_parameters(config).active
    print(f"checkpoint: {weight_bytes / GB:.2f} GB of bf16 weights; a decode step reads {bf16_bytes / GB:.3f} GB "
          f"(the active weights, count_parameters x 2 B)")

    ceiling, why = run_child("ceiling")
    if ceiling:
        print(f"ceiling ({ceiling['threads']} threads): bf16 matrix-vector over expert views {ceiling['bf16_GBps']:.1f} "
              f"GB/s -> {ceiling['bf16_GBps'] * GB / bf16_bytes:.2f} tok/s; int8 (_weight_int8pack_mm) "
              f"{ceiling['int8_GBps']:.1f} GB/s of int8 weights")
    else:
        print(f"ceiling: FAILED, {why}")

    results = {}
    for name in chosen:
        available = load_memory._proc_kb("/proc/meminfo", "MemAvailable") * 1024
        print(f"{name}: in a fresh process ({available / GB:.1f} GB available, load average {load_average()}) ...",
              flush=True)
        result, why = run_child(name, str(folder))
        if result is None:
            print(f"{name}: FAILED, {why}")
            continue
        results[name] = result
        print(f"  {result['impl']}; decode {result['decode_tok_s']:.2f} tok/s", flush=True)

    quality = None
    if not args.skip_quality:
        quality, why = run_child("quality")
        if quality is None:
            print(f"quality: FAILED, {why}")

    print()
    if results:
        print_results(results, ceiling, bf16_bytes, weight_bytes)
        if ceiling and "fast-int8" in results:
            r = results["fast-int8"]
            print(f"int8 ceiling: {ceiling['int8_GBps'] * GB / r['bytes_per_token']:.2f} tok/s "
                  f"({r['bytes_per_token'] / GB:.3f} GB of int8 weights per token); its load includes "
                  f"{r['load_s'] - r['load_only_s']:.1f} s of quantisation")
        print()
        print_goals(results, ceiling, bf16_bytes, weight_bytes)
        print_tokens(results)
    if quality:
        print()
        print_quality(quality)
    print(f"\nload average at the end: {load_average()} on {os.cpu_count()} cores (a shared machine shows here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
