"""The index of every figure the course saves, read from the chapters themselves.

Each chapter saves its figures with `course.save_figure(fig, "NN_what")`: figures/NN_what.png and
.svg side by side. `chapter_figures` reads every chapter's code cells and finds, for each such
call, the figure's name and the function that drew `fig` (the call it was assigned from, through
the chapter's own imports). figures/INDEX.md is written from that, with a caption per figure:
CAPTIONS where one is written below, else the first sentence of the drawing function's docstring.
Nothing here lists the figures by hand: a new chapter's figures are indexed when it saves them.

    python -m lfm2_edu.figures index        # write figures/INDEX.md from the chapters
    python -m lfm2_edu.figures build [NN]   # run the chapters (copies: nothing is written back),
                                            # which save every figure again; then the index
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
FORMATS = ("png", "svg")
NAME = re.compile(r"\d\d_[a-z0-9_]+")  # a figure's name starts with its chapter's number

# One line per figure where the drawing function's docstring does not say it for this chapter.
CAPTIONS = {
    "00_why_lfm2_moe": "LFM2-8B-A1B: parameters stored vs used per token; cache memory vs context, hybrid vs all-attention",
    "01_safetensors_layout": "Where each group of tensors lies in the shipped model's safetensors file",
    "01_parameters_by_group": "Parameters per group, stored and active per token, shipped model and LFM2-8B-A1B",
    "01_layer_pattern": "Mixer (conv or attention) and feed-forward (dense or MoE) of every layer, shipped model and "
                        "LFM2-8B-A1B",
    "02_chars_per_token": "Characters per token in prose, code, arithmetic, JSON, French and Japanese",
    "02_embedding_similarity": "Cosine similarity of the embeddings of digits and common words",
    "03_norm_inputs": "RMS of the residual stream entering every norm, per token; the learned norm weights",
    "03_rope_rotation": "RoPE: angles per position and pair, wavelengths, and q.k depending only on distance",
    "04_conv_weights": "The short conv's kernel taps per channel; mean absolute weight per tap in every conv layer",
    "04_conv_gates": "The conv gates B and C per token and channel",
    "05_gqa_head_mapping": "Which key/value head serves which query heads",
    "05_attention_heads": "Every attention head of one layer, grouped by the key/value head it shares",
    "05_kv_cache_size": "K/V cache bytes vs context length: GQA, multi-head, and the constant conv states",
    "06_router_scores": "Router scores per token and expert, the chosen top-k outlined with their weights, the expert "
                        "bias above",
    "07_layer_stack": "The stack from embedding to tied head, a box per layer's mixer and feed-forward",
    "07_parameters_total_vs_active": "Parameters per group, total and active per token",
    "08_sampling_steps": "One next-token distribution through temperature, min-p, repetition penalty, and all three",
    "08_cache_memory": "Hybrid cache size vs context length, computed and measured, against all-attention",
    "09_tokens_by_first_expert": "Each token's first-choice expert at every layer, expert ids printed; dense layers grey",
    "09_token_scores": "One token at one MoE layer: each expert's score and selection score, the chosen k",
    "09_bias_zeroed": "Tokens re-routed, and the next-token change, when expert_bias is zeroed",
    "10_live_runs": "MaxVio per MoE layer over three live short runs: expert bias, auxiliary loss, no balancing",
    "10_maxvio_over_training": "MaxVio per MoE layer over the three shipped MoE models' training: expert bias, "
                               "auxiliary loss, none",
    "10_load_histograms": "Tokens per expert in each MoE layer at the last training step, per balancing recipe",
    "10_expert_bias": "tiny-lfm2-moe's expert_bias per MoE layer and expert after training",
    "11_layer_expert_load": "Load per MoE layer and expert on held-out text, against uniform",
    "11_domain_specialisation": "Share of each domain's tokens per expert and layer (OLMoE)",
    "11_vocabulary_specialisation": "Where frequent tokens go: N(token to expert) / N(token) at one layer",
    "11_coactivation": "Co-activation N(i and j) / N(i) of expert pairs, per MoE layer",
    "11_consecutive_tokens": "How often neighbouring tokens share an expert, against random routing",
    "11_trained_vs_untrained": "Routing metrics per layer: the trained router against an untrained one",
    "13_roofline": "Roofline of the machine that ran chapter 13 (measured bandwidth and peak), with a batch-1 decode "
                   "step and a 64-token prefill of the fast path on it",
    "13_batch_intensity": "Flops per byte of weights of a decode step against the batch size: LFM2-8B-A1B, the "
                          "shipped model and a dense matrix, against the ridge point",
}


@dataclass(frozen=True)
class Figure:
    name: str  # figures/<name>.png and .svg
    chapter: str  # the notebook's stem, e.g. "04_short_convolution"
    drawn_by: str  # the function that drew it, "lfm2_edu.viz.module.function"

    @property
    def caption(self) -> str:
        return CAPTIONS.get(self.name) or first_sentence(self.function())

    def function(self) -> Callable:
        module, _, name = self.drawn_by.rpartition(".")
        return getattr(importlib.import_module(module), name)


def first_sentence(function: Callable) -> str:
    doc = " ".join((inspect.getdoc(function) or "").split())
    return re.split(r"(?<=[.:;])\s", doc, maxsplit=1)[0].rstrip(".:;")


def chapters() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _code(cell_source: str) -> str:
    """A code cell as Python: IPython's magics and shell lines blanked (line numbers kept)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines())


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def chapter_figures(notebook: Path) -> list[Figure]:
    """The figures one chapter saves, in order: every save_figure(fig, "name") of its code cells,
    with the function `fig` was last assigned from, resolved through the chapter's imports."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    aliases: dict[str, str] = {}  # local name -> dotted module or object path
    drawn: dict[str, str] = {}  # variable -> the dotted call that last assigned it
    found = []
    for n, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        try:
            tree = ast.parse(_code("".join(cell["source"])))
        except SyntaxError as e:
            raise ValueError(f"{notebook.name}, code cell {n}: cannot read it as Python ({e.msg}, line {e.lineno})")
        for node in sorted(ast.walk(tree), key=lambda a: (getattr(a, "lineno", 0), getattr(a, "col_offset", 0))):
            if isinstance(node, ast.Import):
                aliases.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                                for a in node.names})
            elif isinstance(node, ast.ImportFrom) and node.module:
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and (call := _dotted(node.value.func)):
                head, _, rest = call.partition(".")
                resolved = aliases.get(head, head) + (f".{rest}" if rest else "")
                for target in node.targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            drawn[name.id] = resolved
            elif (isinstance(node, ast.Call) and (_dotted(node.func) or "").endswith("save_figure")
                  and len(node.args) >= 2 and isinstance(node.args[0], ast.Name)):
                name = node.args[1]
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                    raise ValueError(f"{notebook.name}, code cell {n}, line {node.lineno}: save_figure needs a "
                                     f"literal name, found {ast.unparse(name)!r}")
                if node.args[0].id not in drawn:
                    raise ValueError(f"{notebook.name}: {name.value!r} saves {node.args[0].id!r}, which no call "
                                     f"before it assigns")
                found.append(Figure(name.value, notebook.stem, drawn[node.args[0].id]))
    return found


def all_figures() -> list[Figure]:
    return [f for book in chapters() for f in chapter_figures(book)]


def index_markdown(found: list[Figure] | None = None) -> str:
    """figures/INDEX.md for these figures (default: every chapter's)."""
    lines = ["# Figures", "",
             "Every figure the chapters save, as PNG and SVG side by side. Written by `python -m lfm2_edu.figures "
             "index` from the chapters' `save_figure` calls; `python -m lfm2_edu.figures build` runs the chapters "
             "to save them all again.", "",
             "| figure | chapter | what it shows | drawn by |", "|---|---|---|---|"]
    for f in all_figures() if found is None else found:
        files = f"[{f.name}]({f.name}.png) ([svg]({f.name}.svg))"
        lines.append(f"| {files} | [{f.chapter}](../notebooks/{f.chapter}.ipynb) | {f.caption} | `{f.drawn_by}` |")
    return "\n".join(lines) + "\n"


def write_index(folder: Path | None = None) -> Path:
    from .course import REPO_FIGURES

    path = (folder or REPO_FIGURES) / "INDEX.md"
    path.write_text(index_markdown(), encoding="utf-8")
    return path


def build(numbers: list[str] | None = None, timeout_s: int | None = None) -> None:
    """Save every figure again: run each chapter in a kernel (a copy: nothing is written back),
    then write the index. timeout_s: per cell (None: no limit)."""
    import nbformat
    from nbclient import NotebookClient

    for path in chapters():
        if numbers and path.name[:2] not in numbers:
            continue
        print(f"running {path.name} ...", flush=True)
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    print(f"wrote {write_index()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lfm2_edu.figures", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("index", help="write figures/INDEX.md from the chapters' save_figure calls")
    run = sub.add_parser("build", help="run the chapters so that they save their figures, then write the index")
    run.add_argument("chapters", nargs="*", help="chapter numbers (default: all), e.g. 07 09")
    args = parser.parse_args(argv)
    if args.command == "index":
        print(f"wrote {write_index()}")
    else:
        build(args.chapters or None)


if __name__ == "__main__":
    main(sys.argv[1:])
