"""What bf16 can promise: the rounding noise of the chapters' comparisons, measured.

A chapter in bf16 compares two computations of the same logits: cached decoding against one full
forward pass (chapter 08), a prompt in a left-padded batch against the prompt alone (chapter 00),
lfm2_edu against transformers (chapter 07). Both sides round, differently. The noise of bf16 on
these logits is measured as max |bf16 - fp32| of one full forward pass, with fp32 computed from
the same weights (`course.upcast`). The benchmark prints each comparison's gap as a multiple of
that noise: the factor `course.tolerance` must allow (its margin, 2). Then the greedy tokens of
the same pairs, compared where the top-2 margin exceeds twice the tolerance (`compare_greedy`).

Models: the shipped tiny-lfm2-moe, and a random model with LFM2-8B-A1B's widths (hidden 2048,
32/8 heads of 64, MLP 7168, experts 1792, top-4, vocab 65536) in 4 layers (conv conv attention
conv, 2 dense, 2 MoE) with 8 experts, initialised as the reference does (N(0, 0.02)), with
randomised norms and expert biases.

    python benchmarks/bf16_noise.py [--skip-random] [--skip-transformers] [--tokens 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/decode.py

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lfm2_edu import SHIPPED_MODEL, LFM2Config, LFM2Model, course, resolve_checkpoint, save_model  # noqa: E402
from lfm2_edu.generate import generate  # noqa: E402
from lfm2_edu.train import init_weights  # noqa: E402


def random_8b_widths(seed: int = 0) -> LFM2Model:
    config = LFM2Config(num_hidden_layers=4, layer_types=["conv", "conv", "full_attention", "conv"],
                        num_dense_layers=2, num_experts=8, max_position_embeddings=4096)
    torch.manual_seed(seed)
    model = init_weights(LFM2Model(config)).eval()
    with torch.no_grad():  # the default init (norms 1, bias 0) would hide norm and bias rounding
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.2)
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                b.normal_(0.0, 0.3)
    return model.to_dtype(torch.bfloat16)


@torch.no_grad()
def measure(name: str, model: LFM2Model, prompts: list[list[int]], new_tokens: int, reference_folder=None) -> None:
    single, other = prompts  # `single` alone, and in a batch beside the longer `other`
    ids = torch.tensor([single])
    full = model(ids).logits[0]  # (T, V) bf16
    with course.upcast(model):
        exact = model(ids).logits[0]  # (T, V) fp32, same weights
    noise = (full.double() - exact.double()).abs().max().item()
    scale = exact.abs().max().item()
    print(f"\n{name}: {len(single)}-token prompt, logits up to {scale:.3g}; bf16 noise max |bf16 - fp32| = {noise:.3g}")

    cache = model.new_cache()  # chapter 08: prefill half, then one token at a time
    half = len(single) // 2
    steps = [model(ids[:, :half], cache=cache).logits[0]] + [model(ids[:, t:t + 1], cache=cache).logits[0]
                                                           for t in range(half, len(single))]
    cached = torch.cat(steps)  # (T, V)
    rows = {"cached decode vs full forward": (cached, full), "cached decode vs fp32": (cached, exact)}

    T = max(len(single), len(other))  # chapter 00: the prompt left-padded in a batch, as generate pads it
    pad = T - len(single)
    batch = torch.tensor([[0] * pad + single, other + [0] * (T - len(other))])
    mask = torch.tensor([[0] * pad + [1] * len(single), [1] * len(other) + [0] * (T - len(other))])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    batched = model(batch, attention_mask=mask, position_ids=positions).logits[0, pad:]  # (T, V)
    rows["padded batch vs alone"] = (batched, full)
    rows["padded batch vs fp32"] = (batched, exact)

    if reference_folder is not None:
        reference, why = course.load_reference(reference_folder, torch.bfloat16)
        if reference is None:
            print("  " + why)
        else:
            ref = reference(ids, use_cache=False).logits[0]
            rows["lfm2_edu vs transformers, both bf16"] = (full, ref)
            rows["transformers bf16 vs fp32"] = (ref, exact)
            del reference
    for label, (a, b) in rows.items():
        gap = (a.double() - b.double()).abs().max().item()
        print(f"  {label:>36}: max gap {gap:.3g} = {gap / noise:.2f} x the noise")

    tol = course.tolerance(torch.bfloat16, fp32=1e-4, measure=lambda: (exact, full))
    print(f"  course.tolerance: {tol}")
    (alone,) = generate(model, single, max_new_tokens=new_tokens, stop_token_ids=[])
    in_batch = generate(model, [single, other], max_new_tokens=new_tokens, stop_token_ids=[])[0]
    forced = model(torch.tensor([single + alone.new_ids])).logits[0, len(single) - 1:-1]  # (new, V)
    print(f"  chapter 00, batched vs alone: {course.compare_greedy(in_batch.new_ids, alone.new_ids, forced, tol)}")
    greedy_full = forced.argmax(-1).tolist()  # chapter 08: the full forward's argmax at every step
    print(f"  chapter 08, cached greedy vs full argmax: {course.compare_greedy(alone.new_ids, greedy_full, forced, tol)}")
    exact_ids = generate_exact(model, single, new_tokens)
    print(f"  bf16 greedy vs fp32 greedy: {course.compare_greedy(alone.new_ids, exact_ids, forced, tol)}")


def generate_exact(model, prompt, n):
    with course.upcast(model):
        return generate(model, prompt, max_new_tokens=n, stop_token_ids=[])[0].new_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-random", action="store_true", help="only the shipped model")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--tokens", type=int, default=24, help="greedy tokens per comparison")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    model, tokenizer = course.load(dtype=torch.bfloat16)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is 35 + 48?"}], add_generation_prompt=True)
    longer = tokenizer.encode("def add(a, b):\n    return a + b  # a longer prompt beside it in the batch")
    folder = None if args.skip_transformers else resolve_checkpoint(SHIPPED_MODEL)
    measure("tiny-lfm2-moe, bf16", model, [chat, longer], args.tokens, folder)

    if not args.skip_random:
        big = random_8b_widths()
        g = torch.Generator().manual_seed(1)
        prompts = [torch.randint(2, 65536, (n,), generator=g).tolist() for n in (17, 40)]
        folder = None
        with tempfile.TemporaryDirectory() as tmp:
            if not args.skip_transformers:
                folder = save_model(big, Path(tmp) / "random-8b-widths")
            measure("random, LFM2-8B-A1B widths (4 layers, 8 experts), bf16", big, prompts, args.tokens, folder)


if __name__ == "__main__":
    main()
