"""The command line: talk to a model, watch its router, read its config.

    lfm2-edu generate --model SOURCE "Why is the sky blue?"   # chat, streamed, recommended sampling
                                                              # (the fast path; --readable, --int8)
    lfm2-edu route    --model SOURCE "The cat sat on the mat"  # experts chosen per token and MoE layer
    lfm2-edu info     --model SOURCE                           # config and parameter counts
    lfm2-edu routing-report --model SOURCE [--text-file F ...] # routing metrics on held-out text

SOURCE is a local checkpoint folder or a hub repo id; without --model, the small model shipped with
the package. `python -m lfm2_edu ...` is the same. Errors print one line and exit with status 2.
The routing data comes from `lfm2_edu.routing.route_tokens`, which chapter 09's explorer uses too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import unicodedata
from pathlib import Path

import torch

from .checkpoint import INDEX_FILE, REPO_ID, SHIPPED_MODEL, CheckpointError, load_model, read_index, resolve_checkpoint
from .config import LFM2Config, read_json
from .course import LARGE_CHECKPOINT_BYTES, checkpoint_bytes
from .fast import FastLFM2
from .generate import RECOMMENDED, stream
from .params import count_parameters
from .routing import RouteTable, route_tokens  # noqa: F401 (shared with the notebooks' explorer)
from .tokenizer import load_tokenizer

PROG = "lfm2-edu"


# 32 hues around the colour wheel (ANSI 256-colour codes); expert e gets PALETTE[13 e mod 32],
# so that neighbouring expert numbers get distant hues.
PALETTE = [196, 202, 208, 214, 220, 226, 190, 154, 118, 82, 46, 47, 48, 49, 50, 51,
           45, 39, 33, 27, 21, 57, 93, 129, 165, 201, 199, 197, 161, 131, 137, 143]


def _colour(text: str, expert: int) -> str:
    return f"\033[38;5;{PALETTE[(13 * expert) % len(PALETTE)]}m{text}\033[0m"


def _width(text: str) -> int:
    """Columns a string takes in a terminal (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def format_route(table: RouteTable, colour: bool = False, max_token_width: int = 16) -> str:
    """The table as text: one row per token, one column of k experts per MoE layer."""
    digits = len(str(table.num_experts - 1))
    k = len(table.experts[0][0])
    cell = k * (digits + 1) - 1
    shown = []
    for tok in table.tokens:
        while _width(tok) > max_token_width:
            tok = tok[:-2] + "…"
        shown.append(tok)
    token_width = max(5, *(_width(t) for t in shown))
    lines = [f"{'token'.ljust(token_width)} │ " + " │ ".join(f"L{i}".rjust(cell) for i in table.layers)]
    lines.append("─" * (token_width + 1) + "┼" + "┼".join("─" * (cell + 2) for _ in table.layers))
    for tok, per_layer in zip(shown, table.experts):
        cells = []
        for experts in per_layer:
            nums = [str(e).rjust(digits) for e in experts]
            cells.append(" ".join(_colour(n, e) if colour else n for n, e in zip(nums, experts)))
        lines.append(tok + " " * (token_width - _width(tok)) + " │ " + " │ ".join(cells))
    return "\n".join(lines)


def _use_colour(choice: str, stream_=None) -> bool:
    """auto: colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    stream_ = stream_ or sys.stdout
    return stream_.isatty() and not os.environ.get("NO_COLOR")


# ------------------------------------------------------------------------------------- commands
def _dtype(folder, choice: str) -> torch.dtype:
    """auto: the checkpoint's own dtype when it is float32 or bfloat16, else float32."""
    if choice != "auto":
        return getattr(torch, choice)
    raw = read_json(folder / "config.json")  # a hostile config is a ConfigError, never a RecursionError
    name = str(raw.get("dtype") or raw.get("torch_dtype") or "float32").removeprefix("torch.")
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def _load(args):
    folder = resolve_checkpoint(args.model)  # a clear error first, before any loading
    LFM2Config.from_file(folder / "config.json")  # validated before _dtype reads it (a dict of sane values)
    tokenizer = load_tokenizer(folder)
    model = load_model(folder, dtype=_dtype(folder, args.dtype), device=args.device)
    return model, tokenizer


def cmd_generate(args) -> int:
    if not args.prompt.strip():
        raise ValueError("prompt: expected some text, found an empty prompt")
    if args.int8 and args.readable:
        raise ValueError("--int8: expected the fast path, found --readable too (int8 weights are the fast path's)")
    model, tokenizer = _load(args)
    runner = model if args.readable else FastLFM2(model, int8=args.int8)  # the same weights, run faster
    if args.no_chat:
        ids = tokenizer.encode(args.prompt)
    else:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": args.prompt})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    eos = model.config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    stop |= {i for i in (tokenizer.eos_token_id, tokenizer.im_end_id) if i is not None and i < model.config.vocab_size}
    settings = dict(temperature=0.0 if args.greedy else args.temperature, top_k=args.top_k, top_p=args.top_p,
                    min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    result = []
    start = time.perf_counter()
    for piece in stream(runner, tokenizer, ids, args.max_new_tokens, stop_token_ids=sorted(stop),
                        result=result, **settings):
        sys.stdout.write(piece)
        sys.stdout.flush()
    elapsed = time.perf_counter() - start
    sys.stdout.write("\n")
    if args.stats:
        n = len(result[0].new_ids)
        path = "readable path" if args.readable else "fast path" + (", int8 weights" if args.int8 else "")
        print(f"[{len(ids)} prompt tokens, {n} new tokens in {elapsed:.2f} s ({n / elapsed:.1f} tok/s), "
              f"finished by {result[0].finish_reason}; {path}]", file=sys.stderr)
    return 0


def cmd_route(args) -> int:
    if not args.text.strip():
        raise ValueError("route: expected some text, found an empty text")
    model, tokenizer = _load(args)
    ids = (tokenizer.apply_chat_template([{"role": "user", "content": args.text}]) if args.chat
           else tokenizer.encode(args.text))
    table = route_tokens(model, tokenizer, ids, layers=args.layers)
    cfg = model.config
    dense = cfg.dense_layers
    print(f"experts chosen per token (top-{cfg.num_experts_per_tok} of {cfg.num_experts}, by selection score) "
          f"at each MoE layer; dense layers {dense or 'none'} have no router")
    print(format_route(table, colour=_use_colour(args.color)))
    return 0


def _windows(args, folder, tokenizer) -> tuple[dict, str]:
    """The text files given (one domain each, named by the file), else the held-out windows."""
    from .routing import held_out_windows, text_windows

    if not args.text_file:
        return held_out_windows(folder, tokenizer, args.seq_len, args.windows)
    texts = {}
    for name in args.text_file:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"--text-file: expected a text file, found nothing at {name}")
        if path.stem in texts:
            raise ValueError(f"--text-file: expected one file per domain name, found {path.stem!r} twice")
        texts[path.stem] = path.read_text(encoding="utf-8")
    return text_windows(tokenizer, texts, args.seq_len, args.windows), "the text files given"


def cmd_routing_report(args) -> int:
    from .routing import compare_routing, format_summary_table, rerouting_control, summary_table

    for name, value, least in (("--seq-len", args.seq_len, 2), ("--windows", args.windows, 1),
                               ("--control-seeds", args.control_seeds, 0)):
        if value < least:
            raise ValueError(f"{name}: expected at least {least}, found {value}")
    folder = resolve_checkpoint(args.model)
    large = checkpoint_bytes(folder) > LARGE_CHECKPOINT_BYTES
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else torch.bfloat16 if large else torch.float32
    cfg = LFM2Config.from_file(folder / "config.json")
    if not cfg.moe_layers:
        raise ValueError(f"routing-report: expected a model with MoE layers, found model_type '{cfg.model_type}' "
                         f"with none (a dense model has no router)")
    tokenizer = load_tokenizer(folder)
    windows, where = _windows(args, folder, tokenizer)
    model = load_model(folder, dtype=dtype, device=args.device)
    untrained = not large if args.untrained is None else args.untrained
    print(f"routing of {args.model} ({cfg.model_type}, {dtype}): MoE layers {cfg.moe_layers}, "
          f"{cfg.num_experts} experts, top-{cfg.num_experts_per_tok}")
    print(f"windows: {where}: " + ", ".join(f"{d} {w.shape[0]} x {w.shape[1]}" for d, w in windows.items())
          + " (the leading bos of each window is routed, not counted)")
    if not untrained:
        print("untrained control left out" + (" (a second, fp32 copy of a large model; --untrained builds it)"
                                               if args.untrained is None else ""))
    with torch.no_grad():
        table = summary_table(compare_routing(model, windows, untrained=untrained, seed=args.seed))
    print(f"\n{table['tokens']} tokens; per MoE layer:")
    print(format_summary_table(table))
    if args.control_seeds > 0:
        T = min(w.shape[1] for w in windows.values())
        sequences = torch.cat([w[:, :T] for w in windows.values()])  # (N, T): every window, cut to one length
        control = rerouting_control(model, sequences, seeds=tuple(range(args.control_seeds)))
        layers = sorted(control["share"])
        print(f"\nre-routing control on {control['tokens']} tokens: the bias's direct share of each layer sent to "
              f"random experts ({control['mode']}) instead")
        print("  direct share".ljust(26) + "".join(f"L{i}".rjust(8) for i in layers))
        print("  (bias dropped)".ljust(26) + "".join(f"{control['share'][i]:8.3f}" for i in layers))
        runs = [("bias zeroed", control["bias_zeroed"])] + [(f"random, seed {r['seed']}", r) for r in control["random"]]
        for name, run in runs:
            print(f"  {name}".ljust(26) + "".join(f"{run['rerouted'][i]:8.3f}" for i in layers)
                  + f"   re-routed; KL {run['kl_mean']:.4f} nats, top-1 changed {run['top1_changed']:.1%}")
    return 0


def _span(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} B"


def _layer_summary(cfg: LFM2Config) -> str:
    attn = cfg.attention_layers
    return (f"{cfg.num_hidden_layers}: {len(cfg.conv_layers)} conv + {len(attn)} attention "
            f"(at {', '.join(map(str, attn)) or '-'})")


# What `info` needs from a hub repo: the config and the small files, not gigabytes of weights.
INFO_FILES = ["config.json", INDEX_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "chat_template.jinja"]


def _info_folder(source: str) -> Path:
    if source == SHIPPED_MODEL or Path(source).expanduser().exists() or not REPO_ID.match(source):
        return resolve_checkpoint(source)  # local, or a clear error
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=INFO_FILES))
    except Exception as online_error:  # no network, unknown or gated repo, ...
        try:
            return Path(snapshot_download(source, allow_patterns=INFO_FILES, local_files_only=True))
        except Exception:
            raise CheckpointError(f"checkpoint: could not download the config of hub repo '{source}' and it is "
                                  f"not in the local hub cache ({type(online_error).__name__}); pass a local "
                                  f"folder instead") from None


def cmd_info(args) -> int:
    folder = _info_folder(args.model)
    cfg = LFM2Config.from_file(folder / "config.json")
    rows = [("checkpoint", str(folder)), ("model_type", cfg.model_type), ("layers", _layer_summary(cfg)),
            ("hidden", f"{cfg.hidden_size}, {cfg.num_attention_heads} query heads / {cfg.num_key_value_heads} "
                       f"kv heads of {cfg.head_dim}, conv kernel {cfg.conv_L_cache}")]
    if cfg.is_moe:
        moe = cfg.moe_layers
        dense = (f"dense SwiGLU {cfg.intermediate_size} in {_span(0, cfg.num_dense_layers - 1)}, "
                 if cfg.num_dense_layers else "")
        rows += [("ffn", f"{dense}MoE in {_span(moe[0], moe[-1])}" if moe else dense.rstrip(", ")),
                 ("experts", f"{cfg.num_experts} per MoE layer of width {cfg.moe_intermediate_size}, top-"
                             f"{cfg.num_experts_per_tok}; expert bias {'on' if cfg.use_expert_bias else 'off'}, "
                             f"top-k renormalised {'yes' if cfg.norm_topk_prob else 'no'}, "
                             f"scale {cfg.routed_scaling_factor}")]
    else:
        rows.append(("ffn", f"dense SwiGLU {cfg.intermediate_size} in every layer"))
    rows += [("vocab", f"{cfg.vocab_size}, {'tied' if cfg.tie_word_embeddings else 'untied'} embedding and head"),
             ("positions", f"up to {cfg.max_position_embeddings}, RoPE theta {cfg.rope_theta:g}"),
             ("special ids", f"bos {cfg.bos_token_id}, eos {cfg.eos_token_id}, pad {cfg.pad_token_id}")]
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors") if p.is_file())
    index = read_index(folder)  # checked as load_model checks it
    if not weights and index is not None:  # a hub repo whose weights were not fetched
        metadata = index.get("metadata")
        total = metadata.get("total_size") if isinstance(metadata, dict) else None
        weights = total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else 0
    rows.append(("weights", f"{_size(weights)} of safetensors" if weights else "none found"))
    if (folder / "tokenizer.json").is_file():
        tok = load_tokenizer(folder)
        rows.append(("tokenizer", f"{tok.vocab_size} tokens, chat template "
                                  f"{'yes' if tok.chat_template else 'none'}"))
    else:
        rows.append(("tokenizer", "none (no tokenizer.json)"))
    for key, value in rows:
        print(f"{key:>12}  {value}")
    counts = count_parameters(cfg)
    print(f"\nparameters: {counts.total:,} total, {counts.active:,} active per token")
    print(counts)
    return 0


# ----------------------------------------------------------------------------------- the parser
def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer numbers separated by commas, found {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Talk to an LFM2 / LFM2-MoE model, watch its router, "
                                                            "read its config.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,route,info,routing-report}")

    def model_options(p, load=True):
        p.add_argument("--model", default=SHIPPED_MODEL,
                       help=f"checkpoint folder or hub repo id (default: the shipped '{SHIPPED_MODEL}')")
        if load:
            p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                           help="weights dtype (auto: the checkpoint's)")
            p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")

    g = sub.add_parser("generate", help="generate a reply (chat) or a continuation (--no-chat), streamed")
    g.add_argument("prompt")
    model_options(g)
    g.add_argument("--no-chat", action="store_true", help="continue the raw text instead of replying as a chat")
    g.add_argument("--system", help="a system prompt (chat only)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=RECOMMENDED["temperature"], help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None, help="0 or unset = off")
    g.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    g.add_argument("--min-p", type=float, default=RECOMMENDED["min_p"], help="0 = off")
    g.add_argument("--repetition-penalty", type=float, default=RECOMMENDED["repetition_penalty"], help="1 = off")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--seed", type=int, default=None, help="for reproducible sampling")
    g.add_argument("--stats", action="store_true", help="print token counts and speed to stderr")
    g.add_argument("--readable", action="store_true", help="run the readable path instead of the fast one")
    g.add_argument("--int8", action="store_true", help="int8 weights (fast path): half the bytes per token")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("route", help="show the experts chosen for each token at each MoE layer")
    r.add_argument("text")
    model_options(r)
    r.add_argument("--chat", action="store_true", help="wrap the text as a user message in the chat template")
    r.add_argument("--layers", type=_int_list, help="only these MoE layers, e.g. 2,10,21 (default: all)")
    r.add_argument("--color", "--colour", default="auto", choices=["auto", "always", "never"],
                   help="auto: on a terminal unless NO_COLOR is set")
    r.set_defaults(func=cmd_route)

    i = sub.add_parser("info", help="config summary and parameter counts (total and active)")
    model_options(i, load=False)
    i.set_defaults(func=cmd_info)

    rr = sub.add_parser("routing-report", help="routing metrics of every MoE layer on held-out text, beside "
                                               "the model with its bias zeroed and an untrained twin")
    model_options(rr, load=False)
    rr.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help=f"weights dtype (auto: float32, bfloat16 for checkpoints over {LARGE_CHECKPOINT_BYTES / 1e9:g} GB)")
    rr.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    rr.add_argument("--text-file", action="append", metavar="FILE",
                    help="route this text instead of the held-out windows (repeatable: one domain per file, "
                         "named by the file)")
    rr.add_argument("--seq-len", type=int, default=128, help="tokens per window (default 128)")
    rr.add_argument("--windows", type=int, default=8, help="windows per domain at most (default 8)")
    rr.add_argument("--untrained", action=argparse.BooleanOptionalAction, default=None,
                    help="add an untrained twin of the same shape (default: yes, unless the checkpoint is large)")
    rr.add_argument("--seed", type=int, default=0, help="seed of the untrained twin")
    rr.add_argument("--control-seeds", type=int, default=3,
                    help="random re-routing runs to compare with zeroing the bias (0: none)")
    rr.set_defaults(func=cmd_routing_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from jinja2.exceptions import TemplateError  # a chat template's raise_exception

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `lfm2-edu route ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except (ValueError, OSError, TemplateError) as err:  # CheckpointError, ConfigError, TokenizerError, settings
        print(f"{PROG}: error: {err}", file=sys.stderr)
        if args.model == SHIPPED_MODEL and "shipped model" in str(err):
            print(f"{PROG}: pass --model with a checkpoint folder or a hub repo id", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
