"""Run every chapter under nbval on checkpoints other than the shipped one, unchanged.

The chapters must not depend on the shipped model: this writes two random checkpoints and runs
`pytest --nbval-lax notebooks/` with LFM2_EDU_MODEL pointing at each:

- lfm2-8b-a1b-widths: LFM2-8B-A1B's exact widths (hidden 2048, vocab 65536, 32 heads / 8 kv
  heads, 32 experts top-4 of width 1792, dense width 7168), 4 layers instead of 24 to fit here;
- dense-lfm2: a dense LFM2 (model_type "lfm2", no MoE layer), LFM2-350M's widths, 4 layers.
Both reuse the shipped tokenizer (its ids are all below either vocabulary size). Figures go to a
temporary folder, so the committed ones are left alone. `--dtype bfloat16` runs the chapters in
bf16 (LFM2_EDU_DTYPE), and `--shipped` adds the shipped model: together, the bf16 path on a small
trained checkpoint.

    python scripts/check_notebooks_on_other_checkpoints.py [--keep DIR] [--dtype bfloat16] [--shipped]
                                                           [notebooks/NN_x.ipynb ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lfm2_edu import SHIPPED_MODEL, LFM2Config, LFM2Model, resolve_checkpoint, save_model
from lfm2_edu.train import init_weights

REPO = Path(__file__).resolve().parent.parent
C, A = "conv", "full_attention"
CHECKPOINTS = {
    "lfm2-8b-a1b-widths": LFM2Config(num_hidden_layers=4, layer_types=[C, C, A, C], num_dense_layers=2),
    "dense-lfm2": LFM2Config(model_type="lfm2", vocab_size=65536, hidden_size=1024, num_hidden_layers=4,
                             num_attention_heads=16, num_key_value_heads=8, layer_types=[C, A, C, A],
                             intermediate_size=4608, num_dense_layers=4, num_experts=0,
                             num_experts_per_tok=0, moe_intermediate_size=0, use_expert_bias=False),
}


def write_checkpoint(config: LFM2Config, folder: Path) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        model = init_weights(LFM2Model(config))
        for name, p in model.named_parameters():  # not all-ones norms: they would hide mistakes
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.2)
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                b.normal_(0.0, 0.05)
    save_model(model, folder, max_shard_bytes=2 * 10**9)
    shipped = resolve_checkpoint(SHIPPED_MODEL)
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(shipped / file, folder / file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="default: all of notebooks/")
    parser.add_argument("--keep", type=Path, help="write the checkpoints here and keep them")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="LFM2_EDU_DTYPE for every run")
    parser.add_argument("--shipped", action="store_true", help="also run on the shipped model")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="lfm2-edu-checkpoints-"))
    notebooks = args.notebooks or [str(REPO / "notebooks")]
    results = {}
    try:
        for name, config in ({SHIPPED_MODEL: None} if args.shipped else {}) | CHECKPOINTS:
            folder = root / name
            if config is not None and not (folder / "config.json").exists():
                print(f"writing {name} ...", flush=True)
                write_checkpoint(config, folder)
            env = dict(os.environ, LFM2_EDU_MODEL=name if config is None else str(folder),
                       LFM2_EDU_FIGURES=str(root / f"figures-{name}"))  # the shipped model by name: is_shipped()
            if args.dtype:
                env["LFM2_EDU_DTYPE"] = args.dtype
            start = time.time()
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "--nbval-lax", "--nbval-current-env", *notebooks], cwd=REPO, env=env)
            results[name] = (run.returncode, time.time() - start)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    for name, (code, seconds) in results.items():
        print(f"{name:>20}: {'passed' if code == 0 else 'FAILED'} in {seconds:.0f} s")
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
