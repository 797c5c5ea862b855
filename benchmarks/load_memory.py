"""Peak memory and time to load LFM2-8B-A1B: lfm2_edu's `load_model` against transformers.

What it measures. A checkpoint with the exact shapes of LFM2-8B-A1B (random bf16 weights, ~16.7
GB, sharded in the hub layout) is written once, then loaded by each implementation in a fresh
process, one after the other, so that each gets its own peak resident set size (VmHWM). Each
child reports: the load time, the peak RSS right after loading, the time to read every weight
byte once, and the peak RSS after that read.

Why the read. lfm2_edu memory-maps the safetensors files, so right after `load_model` most of the
weights are not yet in memory: they are paged in as a forward pass uses them. The peak after
reading every weight is the honest figure, the one a model that has run over all its experts
reaches, and it is the one compared. The goal: lfm2_edu's peak RSS after reading all weights is
at most 1.10 x the weights' bytes (the sum of the tensor sizes in the checkpoint). Sizes are
printed in GB of 10^9 bytes.

    python benchmarks/load_memory.py [--checkpoint DIR] [--skip-transformers | --only NAME]

Exit code 1 when lfm2_edu is measured and over the goal (or fails to load). Every heavy step
(writing, each load) runs in a child process; this parent imports neither torch nor transformers,
so it adds next to nothing to the machine's memory while a child loads.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "bench-checkpoints" / "lfm2-8b-a1b-random"
INDEX_FILE = "model.safetensors.index.json"
SHARD_BYTES = 5 * 10**9
GOAL_RATIO = 1.10
IMPLEMENTATIONS = ("lfm2_edu", "transformers")
RESULT_PREFIX = "RESULT "  # marks the child's JSON line among whatever else it prints
GB = 1e9
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # the shipped model's, copied beside the weights


# ------------------------------------------------------------------------ the random checkpoint
def write_checkpoint(folder: Path) -> None:
    """Random weights with LFM2-8B-A1B's names, shapes and dtypes, one shard in memory at a time."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from lfm2_edu import SHIPPED_MODEL, LFM2Config, LFM2Model, resolve_checkpoint
    from lfm2_edu.checkpoint import plan_shards

    config = LFM2Config()  # the defaults are LFM2-8B-A1B
    with torch.device("meta"):  # names and shapes, no memory
        model = LFM2Model(config)
    specs = {"model." + name: t.to(_checkpoint_dtype(name)) for name, t in model.state_dict().items()}  # meta
    shards = plan_shards(specs, SHARD_BYTES)  # lists of names, as save_model groups them
    files = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]

    # Written beside the target and renamed at the end: an interrupted run leaves only a
    # ".partial" folder (removed by the next run), never something that looks complete.
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hub = config.to_hub_dict()
    hub["dtype"] = "bfloat16"
    (tmp / "config.json").write_text(json.dumps(hub, indent=2) + "\n", encoding="utf-8")
    generator = torch.Generator().manual_seed(0)
    for file, shard in zip(files, shards):
        tensors = {name: _random_tensor(name, tuple(specs[name].shape), specs[name].dtype, generator)
                   for name in shard}
        save_file(tensors, str(tmp / file), metadata={"format": "pt"})
        del tensors
        print(f"  wrote {file}", flush=True)
    weight_map = {name: file for file, shard in zip(files, shards) for name in shard}
    total = sum(t.numel() * t.element_size() for t in specs.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    shipped = resolve_checkpoint(SHIPPED_MODEL)  # its ids all lie below 65536: the chapters can run on it
    for name in TOKENIZER_FILES:
        shutil.copy(shipped / name, tmp / name)
    tmp.rename(folder)


def _checkpoint_dtype(name: str):
    import torch

    return torch.float32 if name.endswith("expert_bias") else torch.bfloat16


def _random_tensor(name: str, shape: tuple, dtype, generator):
    import torch

    t = torch.empty(shape, dtype=dtype)
    if name.endswith("norm.weight"):  # RMSNorm gains: around 1
        return t.normal_(1.0, 0.02, generator=generator)
    return t.normal_(0.0, 0.02, generator=generator)


def checkpoint_bytes(folder: Path) -> int:
    """Sum of the tensor sizes, read from the safetensors headers (not the file sizes)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        total += sum(end - start for key, info in header.items() if key != "__metadata__"
                     for start, end in [info["data_offsets"]])
    return total


# ----------------------------------------------------------------------------- the child side
def measure(implementation: str, folder: str) -> dict:
    """Load, read every weight, and report times and peak RSS (runs in a fresh process)."""
    import torch

    start = time.perf_counter()
    if implementation == "lfm2_edu":
        from lfm2_edu import load_model

        model = load_model(folder, dtype=torch.bfloat16)
    else:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    load_s = time.perf_counter() - start
    peak_after_load = peak_rss_bytes()

    start = time.perf_counter()
    checksum = touch_every_weight(model)
    touch_s = time.perf_counter() - start
    return {"load_s": load_s, "touch_s": touch_s, "peak_after_load": peak_after_load,
            "peak_after_touch": peak_rss_bytes(), "checksum": checksum,
            "weight_bytes_in_memory": sum(t.numel() * t.element_size() for t in _weights(model))}


def touch_every_weight(model) -> float:
    """Read every byte of every parameter and buffer, a few MB at a time (no big fp32 copies)."""
    total = 0.0
    for t in _weights(model):
        for chunk in _chunks(t):
            total += float(chunk.float().sum())
    return total


def _weights(model):
    yield from model.parameters()  # a tied weight comes once
    yield from model.buffers()


def _chunks(t, n: int = 1 << 22):
    if t.is_contiguous():
        flat = t.view(-1)
        for i in range(0, flat.numel(), n):
            yield flat[i:i + n]
    else:  # row by row, so that no whole-tensor copy is made
        for row in t:
            yield from _chunks(row, n)


def peak_rss_bytes() -> int:
    """VmHWM: this process's peak resident set size so far (mapped file pages included)."""
    return _proc_kb("/proc/self/status", "VmHWM") * 1024


def _proc_kb(path: str, key: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not found in {path}")


# ---------------------------------------------------------------------------- the parent side
def run_child(args: list[str]) -> tuple[dict | None, str]:
    """Run this script in a child process; its result line (or why there is none)."""
    proc = subprocess.run([sys.executable, __file__, "--child", *args], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):]), ""
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode}"
        if proc.returncode == -9:
            why += " (SIGKILL: most likely the kernel's out-of-memory killer)"
    else:
        why = f"exited with code {proc.returncode}"
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return None, f"{why}\n{tail}" if tail else why


def ensure_checkpoint(folder: Path) -> None:
    if (folder / INDEX_FILE).is_file() and (folder / "config.json").is_file():
        print(f"checkpoint: {folder} (already written)")
        return
    if folder.exists():
        sys.exit(f"checkpoint: {folder} exists but has no {INDEX_FILE} or config.json; "
                 f"expected a complete checkpoint or no folder (remove it to have it rewritten)")
    print(f"checkpoint: writing random LFM2-8B-A1B weights to {folder} ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", "write", str(folder)], cwd=REPO_ROOT)
    if proc.returncode != 0:
        sys.exit(f"checkpoint: writing failed (exit code {proc.returncode})")
    print(f"checkpoint: written in {time.perf_counter() - start:.0f} s")


def machine_line() -> str:
    total_ram = _proc_kb("/proc/meminfo", "MemTotal") * 1024
    versions = []
    for package in ("torch", "transformers", "safetensors"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return f"machine: {os.cpu_count()} cores, {total_ram / GB:.1f} GB RAM; " + ", ".join(versions)


def print_table(results: dict[str, dict], weight_bytes: int) -> None:
    header = (f"{'implementation':<14} {'load s':>7} {'touch s':>8} {'peak RSS after load':>20} "
              f"{'after touch':>12} {'ratio load':>11} {'ratio touch':>12}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<14} {r['load_s']:>7.1f} {r['touch_s']:>8.1f} "
              f"{r['peak_after_load'] / GB:>17.2f} GB {r['peak_after_touch'] / GB:>9.2f} GB "
              f"{r['peak_after_load'] / weight_bytes:>10.2f}x {r['peak_after_touch'] / weight_bytes:>11.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="folder of the random checkpoint (written if absent)")
    parser.add_argument("--skip-transformers", action="store_true", help="measure lfm2_edu only")
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help="measure this implementation only")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # inside a child process
        task, folder = args.child
        if task == "write":
            write_checkpoint(Path(folder))
        else:
            print(RESULT_PREFIX + json.dumps(measure(task, folder)), flush=True)
        return 0

    print(machine_line())
    folder = args.checkpoint.expanduser().resolve()
    ensure_checkpoint(folder)
    weight_bytes = checkpoint_bytes(folder)
    print(f"checkpoint: {weight_bytes:,} bytes of weights ({weight_bytes / GB:.2f} GB) "
          f"in {len(list(folder.glob('*.safetensors')))} shards")

    chosen = [args.only] if args.only else ["lfm2_edu"] if args.skip_transformers else list(IMPLEMENTATIONS)
    results, failures = {}, {}
    for name in chosen:  # one after the other: never two big loads at once
        available = _proc_kb("/proc/meminfo", "MemAvailable") * 1024
        print(f"\nloading with {name} in a fresh process ({available / GB:.1f} GB available) ...", flush=True)
        result, why = run_child([name, str(folder)])
        if result is None:
            failures[name] = why
            print(f"{name}: FAILED, {why}")
        else:
            results[name] = result

    print()
    if results:
        print_table(results, weight_bytes)
    for name, why in failures.items():
        print(f"{name:<14} FAILED: {why.splitlines()[0]}")

    if "lfm2_edu" not in chosen:
        return 0
    print(f"\ngoal: lfm2_edu peak RSS after touching every weight <= {GOAL_RATIO:.2f} x weight bytes")
    if "lfm2_edu" not in results:
        print("goal: NOT MET (lfm2_edu failed to load)")
        return 1
    ratio = results["lfm2_edu"]["peak_after_touch"] / weight_bytes
    met = ratio <= GOAL_RATIO
    print(f"goal: {'met' if met else 'NOT MET'} ({ratio:.3f}x)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
