"""Run every chapter (and its solutions) under nbval on checkpoints other than the shipped one, unchanged.

The chapters must not depend on the shipped model: this writes two random checkpoints and runs
`pytest --nbval-lax notebooks/` with LFM2_EDU_MODEL pointing at each:

- lfm2-8b-a1b-widths: LFM2-8B-A1B's exact widths (hidden 2048, vocab 65536, 32 heads / 8 kv
  heads, 32 experts top-4 of width 1792, dense width 7168), 4 layers instead of 24 to fit here;
- dense-lfm2: a dense LFM2 (model_type "lfm2", no MoE layer), LFM2-350M's widths, 4 layers.
Both reuse the shipped tokenizer (its ids are all below either vocabulary size). Figures go to a
temporary folder, so the committed ones are left alone. `--dtype bfloat16` runs the chapters in
bf16 (LFM2_EDU_DTYPE), and `--shipped` adds the shipped model: together, the bf16 path on a small
trained checkpoint. `--only NAME` runs only those checkpoints; `--full DIR` adds the full-size
24-layer LFM2-8B-A1B shape from DIR: a real checkpoint, or the random one that
benchmarks/decode_full.py writes (16.7 GB in bf16, with the shipped tokenizer), written to DIR
when DIR does not exist.

Each notebook runs in its own pytest, and the printout gives per checkpoint and notebook the
result, the wall time and the peak memory (RSS) of that run, kernel included.

    python scripts/check_notebooks_on_other_checkpoints.py [--keep DIR] [--dtype bfloat16] [--shipped]
                                                           [--only NAME] [--full DIR [--only full-size]] [notebooks/NN_x.ipynb ...]
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
FULL = "full-size"  # the --full checkpoint's name in the printout and in --only
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
    parser.add_argument("--only", action="append", choices=[*sorted(CHECKPOINTS), FULL],
                        help=f"only these checkpoints ({FULL}: the --full one)")
    parser.add_argument("--full", type=Path, help="also run on this full-size LFM2-8B-A1B-shaped checkpoint folder")
    args = parser.parse_args()
    if args.full is not None:
        if not args.full.exists():  # benchmarks/decode_full.py's random checkpoint, with the shipped tokenizer
            sys.path.insert(0, str(REPO / "benchmarks"))
            import load_memory

            print(f"--full: {args.full} does not exist: writing random LFM2-8B-A1B weights there (16.7 GB)")
            load_memory.ensure_checkpoint(args.full.resolve())
        if not (args.full / "config.json").is_file():
            parser.error(f"--full: expected a checkpoint folder with a config.json, found {args.full}")
        if not (args.full / "tokenizer.json").is_file():
            parser.error(f"--full: expected a tokenizer.json in {args.full}, found none (a random checkpoint can "
                         f"take the shipped model's tokenizer.json and tokenizer_config.json, as the ones written "
                         f"here do)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="lfm2-edu-checkpoints-"))
    paths = [Path(n) for n in args.notebooks] or [*sorted((REPO / "notebooks").glob("[0-9]*.ipynb")),
                                                   *sorted((REPO / "solutions").glob("[0-9]*.ipynb"))]
    runs = ({SHIPPED_MODEL: None} if args.shipped else {}) | {n: c for n, c in CHECKPOINTS.items()
                                                               if not args.only or n in args.only}
    if args.full is not None and (not args.only or FULL in args.only):
        runs[FULL] = args.full
    elif args.only and FULL in args.only:
        parser.error(f"--only {FULL}: expected --full DIR to name its folder")
    results: dict[str, dict[str, tuple[int, float, float]]] = {}
    try:
        for name, config in runs.items():
            folder = config if isinstance(config, Path) else root / name
            if isinstance(config, LFM2Config) and not (folder / "config.json").exists():
                print(f"writing {name} ...", flush=True)
                write_checkpoint(config, folder)
            env = dict(os.environ, LFM2_EDU_MODEL=name if config is None else str(folder),
                       LFM2_EDU_FIGURES=str(root / f"figures-{name}"))  # the shipped model by name: is_shipped()
            if args.dtype:
                env["LFM2_EDU_DTYPE"] = args.dtype
            results[name] = {}
            for path in paths:
                shown = f"{path.parent.name}/{path.name}"  # a chapter and its solutions share a file name
                results[name][shown] = code, seconds, peak = run_notebook(path, env)
                print(f"{name}, {shown}: {'passed' if code == 0 else 'FAILED'} in "
                      f"{seconds:.0f} s, peak RSS {peak / 2**30:.2f} GiB", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\ndtype:", args.dtype or "the chapters' default (LFM2_EDU_DTYPE unset)")
    for name, per_notebook in results.items():
        failed = [n for n, (code, _, _) in per_notebook.items() if code != 0]
        total = sum(s for _, s, _ in per_notebook.values())
        peak = max((p for _, _, p in per_notebook.values()), default=0.0)
        print(f"{name:>20}: {len(per_notebook) - len(failed)} of {len(per_notebook)} passed in {total:.0f} s, "
              f"peak RSS {peak / 2**30:.2f} GiB" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 0 if all(code == 0 for r in results.values() for code, _, _ in r.values()) else 1


def run_notebook(path: Path, env: dict) -> tuple[int, float, float]:
    """(exit code, seconds, peak RSS in bytes) of one notebook under nbval, kernel included: the
    rusage of a waited-for child covers the descendants it waited for (pytest waits for its kernel)."""
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-current-env", str(path)], cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.time() - start, usage.ru_maxrss * 1024.0  # ru_maxrss is in KiB on Linux


if __name__ == "__main__":
    sys.exit(main())
