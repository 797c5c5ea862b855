"""What every chapter shares: the checkpoint and dtype it runs in, its header, its reference.

The chapters run on the small LFM2-MoE that ships with the package, in fp32, unless told otherwise:

    LFM2_EDU_MODEL=LiquidAI/LFM2-8B-A1B jupyter lab       # a hub id (downloaded once, 16.7 GB)
    LFM2_EDU_MODEL=/path/to/a/checkpoint jupyter lab      # or any local LFM2 / LFM2-MoE folder
    LFM2_EDU_DTYPE=bfloat16 jupyter lab                   # or float32; the default is fp32,
                                                          # bf16 for checkpoints over 4 GB

or by setting `lfm2_edu.course.MODEL` / `DTYPE` before calling `load()`. Figures go to the
repository's `figures/` folder for the shipped model in its default dtype, to
`figures/<checkpoint name>/` for any other checkpoint or dtype, or to the folder named by
LFM2_EDU_FIGURES; each as PNG and SVG (see lfm2_edu.figures, the index). Where the package is
installed without its repository (Colab), `figures/` is in the working folder.

Also here: `chapter_header` (every chapter's first cell), `load_reference` (transformers' model
of the same checkpoint, or why not), `stand_in_model` (a random LFM2-MoE for checkpoints without
experts), and what a comparison in low precision can promise: `tolerance` (measured, per dtype),
`upcast` (the same weights computed in fp32) and `compare_greedy` (tokens, robust to near-ties).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import SHIPPED_MODEL, load_model, resolve_checkpoint
from .model import LFM2Model

MODEL_ENV, FIGURES_ENV, DTYPE_ENV = "LFM2_EDU_MODEL", "LFM2_EDU_FIGURES", "LFM2_EDU_DTYPE"
MODEL: str | None = None  # set to override the environment variable
DTYPE: torch.dtype | None = None  # set to override LFM2_EDU_DTYPE
CHAPTER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
REPO_FIGURES = Path(__file__).resolve().parent.parent / "figures"
IN_REPOSITORY = (REPO_FIGURES.parent / "pyproject.toml").is_file()  # not when installed from a wheel
LARGE_CHECKPOINT_BYTES = 4 * 10**9  # above this, chapters load in bf16 (fp32 would double it)


def model_source() -> str:
    """The checkpoint the chapters use: MODEL, else $LFM2_EDU_MODEL, else the shipped model."""
    return MODEL or os.environ.get(MODEL_ENV) or SHIPPED_MODEL


def is_shipped() -> bool:
    return model_source() == SHIPPED_MODEL


def is_trained() -> bool:
    """Whether the chapters' checkpoint is one known to be trained (the shipped model or the real
    LFM2-8B-A1B): a check that needs a decisive greedy token can demand one there; random weights,
    as in the bf16 test checkpoints, may give near-ties at every step."""
    from . import published

    return is_shipped() or published.is_published_model(model_source())


def checkpoint_bytes(folder: Path) -> int:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return int(json.loads(index.read_text())["metadata"]["total_size"])
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def chapter_dtype(source: str | None = None) -> torch.dtype:
    """The dtype the chapters compute in: DTYPE, else $LFM2_EDU_DTYPE ('float32' or 'bfloat16'),
    else fp32, or bf16 for a checkpoint over 4 GB (in fp32 it would take twice the memory)."""
    if DTYPE is not None:
        if DTYPE not in CHAPTER_DTYPES.values():
            raise ValueError(f"course.DTYPE: expected torch.float32 or torch.bfloat16, found {DTYPE}")
        return DTYPE
    name = os.environ.get(DTYPE_ENV, "").strip()
    if name:
        if name not in CHAPTER_DTYPES:
            raise ValueError(f"{DTYPE_ENV}: expected one of {list(CHAPTER_DTYPES)}, found {name!r}")
        return CHAPTER_DTYPES[name]
    return default_dtype(source)


def default_dtype(source: str | None = None) -> torch.dtype:
    """The chapters' dtype for a checkpoint when nothing chooses one: fp32, bf16 over 4 GB."""
    folder = resolve_checkpoint(source or model_source())
    return torch.bfloat16 if checkpoint_bytes(folder) > LARGE_CHECKPOINT_BYTES else torch.float32


def load(source: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) for the chapters, in `dtype` or else the chapters' dtype (chapter_dtype)."""
    from .tokenizer import load_tokenizer

    source = source or model_source()
    folder = resolve_checkpoint(source)
    model: LFM2Model = load_model(folder, dtype=dtype or chapter_dtype(source))
    return model, load_tokenizer(source)


def transformers_missing(python: tuple[int, int] = sys.version_info[:2]) -> str:
    """Why transformers (the reference) cannot be imported, and what to do: on Python 3.10 the dev
    extra leaves it out, because the version the tests pin (pyproject.toml) needs 3.11 or newer."""
    if python < (3, 11):
        return (f"transformers (the reference) is not installed: the version the tests pin needs Python 3.11 "
                f"or newer, and this is Python {python[0]}.{python[1]}")
    return "transformers (the reference) is not installed: pip install -e '.[dev]'"


def load_reference(source: str | os.PathLike | None = None, dtype: torch.dtype | None = None):
    """(reference, what it is) or (None, why it was skipped): transformers' model of the checkpoint.

    Loaded as the parity tests load their oracle: from the checkpoint folder with eager attention
    and eager experts, in `dtype` (the chapters' dtype by default; bf16 through from_pretrained,
    which keeps expert_bias and inv_freq in fp32). Skipped without transformers, and for a
    checkpoint over 4 GB: a second copy would not fit beside the chapter's model on a laptop.
    """
    try:
        import transformers
    except ImportError:
        return None, f"skipped: {transformers_missing()}"
    source = source or model_source()
    folder = resolve_checkpoint(source)
    size = checkpoint_bytes(folder)
    if size > LARGE_CHECKPOINT_BYTES:
        return None, (f"skipped: the checkpoint holds {size / 1e9:.1f} GB of weights; a second copy for the "
                      f"reference would not fit beside the model")
    dtype = dtype or chapter_dtype(source)
    transformers.logging.set_verbosity_error()  # no progress bars or kernel notices in the chapters
    transformers.logging.disable_progress_bar()
    try:
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    except (ValueError, KeyError) as err:  # e.g. a transformers too old to know lfm2_moe
        return None, f"skipped: transformers {transformers.__version__} cannot load this checkpoint ({err})"
    if hasattr(reference, "set_experts_implementation"):
        reference.set_experts_implementation("eager")  # the readable loop over experts, as in lfm2_edu
    return reference.eval(), (f"reference: transformers {transformers.__version__}, {type(reference).__name__}, "
                              f"{_name(dtype)}, eager attention and experts")


def stand_in_model(vocab_size: int, seed: int = 0) -> LFM2Model:
    """A small LFM2-MoE with random weights and a random expert_bias, for the MoE chapters (06,
    09-11) on a checkpoint with no MoE layer: 4 layers (conv, conv, attention, conv), one dense
    then three MoE layers of 8 experts, top-2, hidden 64. Its mechanics are those of any
    LFM2-MoE; its choices mean nothing. `vocab_size`: the checkpoint's, so its token ids fit."""
    from .config import LFM2Config

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size: expected a positive integer, found {vocab_size!r}")
    config = LFM2Config(model_type="lfm2_moe", vocab_size=vocab_size, hidden_size=64, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2,
                        layer_types=["conv", "conv", "full_attention", "conv"], intermediate_size=128,
                        num_dense_layers=1, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                        use_expert_bias=True, max_position_embeddings=2048)
    generator = torch.Generator().manual_seed(seed)
    model = LFM2Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=generator))  # nonzero: it changes some choices
    return model


# ------------------------------------------------------------------------- the chapter header
# Every chapter opens with the same header, as Markdown in its first cell: render it with
# chapter_header(...), paste it; tests/test_chapter_headers.py parses it back from every chapter.
ANOTHER_CHECKPOINT = (
    "**Another checkpoint?** This chapter runs unchanged on any LFM2-MoE or dense LFM2 checkpoint: set "
    "`LFM2_EDU_MODEL` to a hub id (`LiquidAI/LFM2-8B-A1B`) or a local folder before starting Jupyter, or set "
    "`course.MODEL = ...` before `course.load()`; `LFM2_EDU_DTYPE=bfloat16` (or `float32`) chooses the dtype. "
    "By default it runs in fp32 on the small model shipped with the package, with no download; a checkpoint "
    "over 4 GB loads in bf16."
)


@dataclass
class ChapterHeader:
    number: int  # the NN of notebooks/NN_*.ipynb
    title: str
    objectives: list[str]  # what you can do after it, one line each
    prerequisites: list[str]  # what you need before it ("chapter 03", "PyTorch tensors"); [] for none
    minutes: int  # to work through it, exercises included
    builds: str  # what you build


def chapter_header(number: int, title: str, objectives: Sequence[str], prerequisites: Sequence[str],
                   minutes: int, builds: str) -> str:
    """The Markdown of a chapter's first cell: title, objectives, prerequisites, minutes, what you
    build, and the note on running it on another checkpoint."""
    h = ChapterHeader(number, title, list(objectives), list(prerequisites), minutes, builds)
    _check_header(h)
    return "\n".join([
        f"# {h.number:02d} · {h.title}", "",
        "**Objectives.** After this chapter you can:", "", *(f"- {o}" for o in h.objectives), "",
        f"**Prerequisites.** {'; '.join(h.prerequisites) if h.prerequisites else 'none'}.", "",
        f"**Minutes.** {h.minutes}", "",
        f"**You build.** {h.builds}", "",
        ANOTHER_CHECKPOINT,
    ])


def parse_chapter_header(markdown: str) -> ChapterHeader:
    """The header a chapter's first cell holds; ValueError naming the first part that is missing
    or not in the form chapter_header writes."""
    lines = markdown.strip().splitlines()

    def after(label: str) -> tuple[int, str]:
        for n, line in enumerate(lines):
            if line.startswith(label):
                return n, line[len(label):].strip()
        raise ValueError(f"chapter header: expected a line starting {label!r}, found none")

    title = re.fullmatch(r"# (\d\d) · (.+)", lines[0] if lines else "")
    if not title:
        raise ValueError(f"chapter header: expected a first line '# NN · Title', found {(lines or [''])[0]!r}")
    n, _ = after("**Objectives.** After this chapter you can:")
    objectives = []
    for line in lines[n + 1:]:
        if line.startswith("- "):
            objectives.append(line[2:].strip())
        elif line.strip() or objectives:
            break
    prerequisites = after("**Prerequisites.**")[1].removesuffix(".")
    minutes = after("**Minutes.**")[1]
    if not minutes.isdigit():
        raise ValueError(f"chapter header: expected '**Minutes.** <a whole number>', found {minutes!r}")
    header = ChapterHeader(int(title[1]), title[2].strip(), objectives,
                           [] if prerequisites == "none" else prerequisites.split("; "),
                           int(minutes), after("**You build.**")[1])
    _check_header(header)
    canonical = chapter_header(**vars(header)).splitlines()
    for n, (found, expected) in enumerate(zip(lines + [""] * len(canonical), canonical)):
        if found != expected:
            raise ValueError(f"chapter header, line {n + 1}: expected {expected!r} (as chapter_header writes it), "
                             f"found {found!r}")
    return header


def _check_header(h: ChapterHeader) -> None:
    if not (isinstance(h.number, int) and 0 <= h.number <= 99):
        raise ValueError(f"chapter header: expected a chapter number from 0 to 99, found {h.number!r}")
    if not isinstance(h.minutes, int) or not 5 <= h.minutes <= 240:
        raise ValueError(f"chapter header: expected minutes from 5 to 240, found {h.minutes!r}")
    if not 1 <= len(h.objectives) <= 6:
        raise ValueError(f"chapter header: expected 1 to 6 objectives, found {len(h.objectives)}")
    for part, texts in (("title", [h.title]), ("objective", h.objectives), ("prerequisite", h.prerequisites),
                        ("what you build", [h.builds])):
        for text in texts:
            if not isinstance(text, str) or not text.strip() or "\n" in text or (part == "prerequisite" and ";" in text):
                raise ValueError(f"chapter header: expected each {part} to be one line of text"
                                 f"{' without ;' if part == 'prerequisite' else ''}, found {text!r}")


# ------------------------------------------------------- what a low-precision comparison can promise
@dataclass(frozen=True)
class Tolerance:
    """How far two results computed in `dtype` may differ, and why: the chapter prints it."""

    dtype: torch.dtype
    atol: float
    why: str

    def gap(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """max |a - b|, computed in float64."""
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"tolerance: expected two tensors of one shape, found {tuple(a.shape)} and {tuple(b.shape)}")
        return (a.detach().double().cpu() - b.detach().double().cpu()).abs().max().item() if a.numel() else 0.0

    def close(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return self.gap(a, b) <= self.atol

    def __str__(self) -> str:
        return f"{_name(self.dtype)}: tolerance {self.atol:.2g} ({self.why})"


def tolerance(dtype: torch.dtype, *, fp32: float,
              measure: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
              margin: float = 2.0) -> Tolerance:
    """The tolerance of one comparison in `dtype`: stated for fp32, measured below it.

    fp32: the tolerance the chapter states for fp32 (its rounding, a few units in the last place).
    measure: for bf16, a function returning (exact, working): the same quantity computed in fp32
    (e.g. inside `upcast(model)`) and in the working dtype. The tolerance is `margin` x the largest
    difference between them, the rounding this dtype adds to this very computation; never less
    than the rounding of the result itself (half a unit in the last place of the largest value).
    margin 2: two results each within the measured rounding of the exact value differ by at most
    twice it (benchmarks/bf16_noise.py measures the chapters' comparisons against it).
    """
    if dtype in (torch.float32, torch.float64):
        return Tolerance(dtype, float(fp32), "stated for fp32")
    if measure is None:
        raise ValueError(f"tolerance: a {_name(dtype)} tolerance must be measured: pass measure=, a function "
                         f"returning the same quantity computed in fp32 and in {_name(dtype)}")
    exact, working = measure()
    if working.dtype != dtype or exact.dtype.itemsize <= dtype.itemsize or not exact.is_floating_point():
        raise ValueError(f"tolerance: measure() must return (exact in a wider float dtype, working in "
                         f"{_name(dtype)}), found ({exact.dtype}, {working.dtype})")
    noise = Tolerance(dtype, 0.0, "").gap(exact, working)
    largest = exact.detach().abs().max().item() if exact.numel() else 0.0
    floor = 0.5 * torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(largest)) if largest > 0 else 0.0  # ulp / 2
    why = f"{margin:g} x the measured {_name(dtype)} rounding {noise:.2g}, max |{_name(dtype)} - fp32| of the same computation"
    if floor > noise:
        why += f"; raised to the rounding of the result itself, {floor:.2g}"
    return Tolerance(dtype, margin * max(noise, floor), why)


@contextmanager
def upcast(model: LFM2Model, dtype: torch.dtype = torch.float32):
    """Inside this block `model` computes in `dtype` (fp32) from its own weights: the exact result
    that a low-precision run approximates. Each layer is upcast only while it runs, so it costs
    one layer (and the embedding) of extra memory, even for LFM2-8B-A1B in bf16."""
    saved: dict[int, torch.Tensor] = {}  # id(param) -> its original data

    def up(module: torch.nn.Module, *_) -> None:
        for p in module.parameters():
            if p.is_floating_point() and p.dtype != dtype and id(p) not in saved:
                saved[id(p)] = p.data
                p.data = p.data.to(dtype)

    def down(module: torch.nn.Module, *_) -> None:
        for p in module.parameters():
            if id(p) in saved:
                p.data = saved.pop(id(p))

    always = [model.embed_tokens, model.embedding_norm] + ([] if model.config.tie_word_embeddings else [model.lm_head])
    hooks = [h for layer in model.layers
             for h in (layer.register_forward_pre_hook(up), layer.register_forward_hook(down))]
    try:
        for module in always:  # the embedding makes the activations fp32; the head reads it again
            up(module)
        yield model
    finally:
        for h in hooks:
            h.remove()
        for module in [*always, *model.layers]:
            down(module)


@dataclass
class GreedyComparison:
    """Two greedy runs compared token by token, as far as the dtype's noise allows."""

    length: int  # positions both runs produced
    compared: int  # positions whose top-2 margin exceeds the threshold, before any divergence
    near_ties: int  # positions before the divergence too close to call (not compared)
    diverged_at: int | None  # the first position where the tokens differ, if any
    margin_there: float | None  # the top-2 margin at that position
    threshold: float  # 2 x the logit tolerance: a smaller margin can flip under that much noise

    @property
    def ok(self) -> bool:
        """No divergence, or one at a near-tie (after which the runs read different texts)."""
        return self.diverged_at is None or self.margin_there <= self.threshold

    def __str__(self) -> str:
        head = (f"compared {self.compared} of {self.length} greedy tokens (top-2 margin above {self.threshold:.2g})"
                f"{f', {self.near_ties} near-ties skipped' if self.near_ties else ''}")
        if self.diverged_at is None:
            return head + ": identical"
        if self.ok:
            return (head + f": the runs part at token {self.diverged_at}, a near-tie (margin {self.margin_there:.2g}); "
                    f"the {self.length - self.diverged_at} tokens from there on read different texts, not compared")
        return head + f": they differ at token {self.diverged_at}, where the margin {self.margin_there:.2g} is decisive"


def compare_greedy(ours: Sequence[int], theirs: Sequence[int], logits: torch.Tensor,
                   tol: Tolerance | float) -> GreedyComparison:
    """Compare two greedy token sequences where a logit error within `tol` cannot flip the choice.

    logits: (N, V), row t the distribution that chose theirs[t] (e.g. one forward pass over
    prompt + theirs: logits[len(prompt) - 1:]). Where its top two logits are less than 2 x tol
    apart, noise of tol in each run may pick either, so that position is not compared; and after
    the first differing token the two runs continue different texts, so nothing after it is.
    """
    atol = tol.atol if isinstance(tol, Tolerance) else float(tol)
    length = min(len(ours), len(theirs))
    if logits.dim() != 2 or logits.shape[0] < length:
        raise ValueError(f"logits: expected (N, V) with N >= {length} (one row per compared token), "
                         f"found {tuple(logits.shape)}")
    top2 = logits[:length].detach().double().topk(2, dim=-1).values  # (length, 2)
    margins = (top2[:, 0] - top2[:, 1]).cpu()  # (length,)
    threshold = 2 * atol
    compared = near = 0
    for t in range(length):
        if int(ours[t]) != int(theirs[t]):
            return GreedyComparison(length, compared, near, t, margins[t].item(), threshold)
        if margins[t] > threshold:
            compared += 1
        else:
            near += 1
    return GreedyComparison(length, compared, near, None, None, threshold)


def _name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def figures_dir() -> Path:
    """Where the chapters save their figures: $LFM2_EDU_FIGURES if set; else figures/ for the
    shipped model in its default dtype (the committed figures); else a subfolder named for the
    checkpoint, and for the dtype when it is not the checkpoint's default, such as
    figures/LFM2-8B-A1B/ or figures/tiny-lfm2-moe-bf16/, so no other run overwrites them."""
    if os.environ.get(FIGURES_ENV):
        folder = Path(os.environ[FIGURES_ENV])
    else:
        base = REPO_FIGURES if IN_REPOSITORY else Path.cwd() / "figures"
        source, dtype = model_source(), chapter_dtype()
        own_dtype = dtype == default_dtype(source)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).name or "other") + ("" if own_dtype else f"-{_name(dtype)}")
        folder = base if is_shipped() and own_dtype else base / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as figures/<name>.png and figures/<name>.svg side by side (name:
    chapter number and what it shows, as in the registry lfm2_edu.figures). Returns the PNG's path.

    Both files are the same on every run (no dates, SVG ids seeded by the name), so re-running a
    chapter leaves them unchanged unless the figure changed."""
    import matplotlib.pyplot as plt

    folder = figures_dir()
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    fig.savefig(png, dpi=110, bbox_inches="tight", metadata={"Software": None})
    with plt.rc_context({"svg.hashsalt": name}):
        fig.savefig(svg, bbox_inches="tight", metadata={"Date": None, "Creator": None})
    return png
