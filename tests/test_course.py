"""What the chapters share (lfm2_edu.course): the dtype, the reference, the stand-in MoE, the
header, and what a comparison in bf16 can promise (measured tolerances, near-tie-robust greedy)."""

import copy
import sys

import pytest
import torch

from lfm2_edu import SHIPPED_MODEL, course, routing
from lfm2_edu.course import ChapterHeader, Tolerance, chapter_header, compare_greedy, parse_chapter_header, tolerance, upcast
from lfm2_edu.generate import generate
from reference import require_transformers, tiny_config
from test_cache import random_model


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(course.DTYPE_ENV, raising=False)
    monkeypatch.delenv(course.MODEL_ENV, raising=False)
    monkeypatch.setattr(course, "DTYPE", None)
    monkeypatch.setattr(course, "MODEL", None)
    return monkeypatch


# ---------------------------------------------------------------------------------- the dtype
def test_the_chapters_dtype_comes_from_the_environment(clean_env):
    assert course.chapter_dtype() == torch.float32  # the shipped model is small: fp32
    clean_env.setenv(course.DTYPE_ENV, "bfloat16")
    assert course.chapter_dtype() == torch.bfloat16
    clean_env.setenv(course.DTYPE_ENV, "float32")
    assert course.chapter_dtype() == torch.float32
    clean_env.setattr(course, "DTYPE", torch.bfloat16)  # the module setting wins
    assert course.chapter_dtype() == torch.bfloat16


def test_large_checkpoints_default_to_bf16(clean_env):
    clean_env.setattr(course, "LARGE_CHECKPOINT_BYTES", 1000)
    assert course.chapter_dtype() == torch.bfloat16
    clean_env.setenv(course.DTYPE_ENV, "float32")  # unless asked otherwise
    assert course.chapter_dtype() == torch.float32


def test_a_bad_dtype_is_refused_with_what_is_expected(clean_env):
    clean_env.setenv(course.DTYPE_ENV, "fp16")
    with pytest.raises(ValueError, match=r"LFM2_EDU_DTYPE: expected one of \['float32', 'bfloat16'\], found 'fp16'"):
        course.chapter_dtype()
    clean_env.setattr(course, "DTYPE", torch.float16)
    with pytest.raises(ValueError, match=r"course.DTYPE: expected torch.float32 or torch.bfloat16, found torch.float16"):
        course.chapter_dtype()


def test_load_uses_the_chapters_dtype(clean_env):
    clean_env.setenv(course.DTYPE_ENV, "bfloat16")
    model, _ = course.load()
    assert model.dtype == torch.bfloat16
    assert all(layer.feed_forward.expert_bias.dtype == torch.float32 for layer in model.layers if layer.is_moe)


# ----------------------------------------------------------------------------- the reference
@torch.no_grad()
def test_load_reference_gives_transformers_model_of_the_checkpoint(clean_env):
    require_transformers()
    model, tokenizer = course.load()
    reference, what = course.load_reference()
    assert reference is not None, what
    assert what.startswith("reference: transformers ") and "Lfm2MoeForCausalLM, fp32, eager attention and experts" in what
    ids = torch.tensor([tokenizer.encode("def add(a, b):")])
    assert (reference(ids, use_cache=False).logits - model(ids).logits).abs().max() <= 1e-4
    reference16, what16 = course.load_reference(dtype=torch.bfloat16)
    assert reference16.dtype == torch.bfloat16 and ", bf16, " in what16


def test_load_reference_says_why_it_skips_a_large_checkpoint(clean_env):
    require_transformers()  # without it, load_reference skips for that reason first
    clean_env.setattr(course, "LARGE_CHECKPOINT_BYTES", 1000)
    reference, why = course.load_reference()
    assert reference is None and why.startswith("skipped: the checkpoint holds 0.0 GB of weights; a second copy")


def test_load_reference_says_why_it_skips_without_transformers(clean_env):
    clean_env.setitem(sys.modules, "transformers", None)  # as if it were not installed
    reference, why = course.load_reference()
    assert reference is None and why.startswith("skipped: transformers (the reference) is not installed")


def test_without_transformers_python_3_10_is_told_why_the_dev_extra_did_not_bring_it():
    assert course.transformers_missing((3, 10)).endswith("needs Python 3.11 or newer, and this is Python 3.10")
    assert course.transformers_missing((3, 12)).endswith("pip install -e '.[dev]'")


# ------------------------------------------------------------------------------- the stand-in
@torch.no_grad()
def test_one_stand_in_moe_for_every_chapter():
    model = course.stand_in_model(300)
    cfg = model.config
    assert cfg.is_moe and cfg.moe_layers == [1, 2, 3] and (cfg.num_experts, cfg.num_experts_per_tok) == (8, 2)
    bias = model.layers[1].feed_forward.expert_bias
    assert bias.abs().min() > 0 and torch.equal(course.stand_in_model(300).layers[1].feed_forward.expert_bias, bias)
    assert model(torch.tensor([[1, 299, 5]])).logits.shape == (1, 3, 300)
    # routing.stand_in_model is this one
    theirs = routing.stand_in_model(300).state_dict()
    assert all(torch.equal(t, theirs[name]) for name, t in model.state_dict().items())
    with pytest.raises(ValueError, match="vocab_size: expected a positive integer, found 0"):
        course.stand_in_model(0)


# ---------------------------------------------------------------------------------- the header
HEADER = dict(number=4, title="The short convolution",
              objectives=["build LFM2's double-gated short convolution from its weights",
                          "decode with its constant-size cache"],
              prerequisites=["chapter 03", "PyTorch's `F.conv1d`"], minutes=30,
              builds="`short_conv(h, block)`, equal to `lfm2_edu.conv.ShortConv`")


def test_a_header_renders_and_parses_back():
    text = chapter_header(**HEADER)
    assert text.splitlines()[:6] == ["# 04 · The short convolution", "", "**Objectives.** After this chapter you can:", "",
                                     "- build LFM2's double-gated short convolution from its weights",
                                     "- decode with its constant-size cache"]
    assert "**Prerequisites.** chapter 03; PyTorch's `F.conv1d`." in text and "**Minutes.** 30" in text
    assert text.endswith(course.ANOTHER_CHECKPOINT) and "LFM2_EDU_DTYPE" in text and "LFM2_EDU_MODEL" in text
    assert parse_chapter_header(text) == ChapterHeader(**HEADER)
    none = parse_chapter_header(chapter_header(**{**HEADER, "number": 0, "prerequisites": []}))
    assert none.prerequisites == [] and "**Prerequisites.** none." in chapter_header(**{**HEADER, "prerequisites": []})


@pytest.mark.parametrize("change,message", [
    (lambda t: t.replace("# 04 · ", "# 4 · "), r"expected a first line '# NN · Title', found '# 4 · The short convolution'"),
    (lambda t: t.replace("**Minutes.** 30\n\n", ""), r"expected a line starting '\*\*Minutes.\*\*', found none"),
    (lambda t: t.replace("**Minutes.** 30", "**Minutes.** half an hour"), r"expected '\*\*Minutes.\*\* <a whole number>'"),
    (lambda t: t.replace("**Minutes.** 30", "**Minutes.** 2"), r"expected minutes from 5 to 240, found 2"),
    (lambda t: t.replace("- build", "* build").replace("- decode", "* decode"), r"expected 1 to 6 objectives, found 0"),
    (lambda t: t.replace("**You build.** `short", "**You build.**\n`short"), r"expected each what you build to be one line"),
    (lambda t: t.replace(course.ANOTHER_CHECKPOINT, "Runs on the shipped model."), r"line 14: expected '\*\*Another checkpoint\?\*\*"),
    (lambda t: t.replace("\n\n**Prerequisites.**", "\n**Prerequisites.**"), r"line 7: expected '' \(as chapter_header writes it\)"),
])
def test_a_header_not_in_the_form_says_where(change, message):
    with pytest.raises(ValueError, match=message):
        parse_chapter_header(change(chapter_header(**HEADER)))


def test_bad_header_fields_are_refused():
    with pytest.raises(ValueError, match=r"expected each prerequisite to be one line of text without ;"):
        chapter_header(**{**HEADER, "prerequisites": ["chapters 02; 03"]})
    with pytest.raises(ValueError, match=r"expected 1 to 6 objectives, found 0"):
        chapter_header(**{**HEADER, "objectives": []})


# ---------------------------------------------------------------- what bf16 can promise, measured
def test_fp32_tolerances_are_stated_and_bf16_ones_must_be_measured():
    tol = tolerance(torch.float32, fp32=1e-5)
    assert (tol.atol, str(tol)) == (1e-5, "fp32: tolerance 1e-05 (stated for fp32)")
    with pytest.raises(ValueError, match="a bf16 tolerance must be measured: pass measure="):
        tolerance(torch.bfloat16, fp32=1e-5)
    with pytest.raises(ValueError, match=r"measure\(\) must return \(exact in a wider float dtype, working in bf16\)"):
        tolerance(torch.bfloat16, fp32=1e-5, measure=lambda: (torch.ones(2), torch.ones(2)))


def test_a_measured_tolerance_is_the_margin_times_the_rounding():
    x = torch.rand(200, generator=torch.Generator().manual_seed(0))
    exact, working = (x + 1000) - 1000, (x.bfloat16() + 1000) - 1000  # bf16 spaces 1000 and 1004 apart: cancellation
    noise = (exact.double() - working.double()).abs().max().item()
    tol = tolerance(torch.bfloat16, fp32=1e-5, measure=lambda: (exact, working), margin=3)
    assert noise > 0.5 and tol.atol == 3 * noise and f"3 x the measured bf16 rounding {noise:.2g}" in str(tol)
    exact_in_bf16 = torch.tensor([1.0, 2.0, 5.0])  # no rounding at all: the result's own rounding, half of 2^-5
    floor = tolerance(torch.bfloat16, fp32=1e-5, measure=lambda: (exact_in_bf16, exact_in_bf16.bfloat16()))
    assert floor.atol == 2 * 2**-6 and "raised to the rounding of the result itself, 0.016" in str(floor)
    assert floor.close(torch.zeros(3), torch.full((3,), 0.03)) and not floor.close(torch.zeros(3), torch.full((3,), 0.04))
    with pytest.raises(ValueError, match=r"two tensors of one shape, found \(3,\) and \(2,\)"):
        tol.gap(torch.zeros(3), torch.zeros(2))


@torch.no_grad()
@pytest.mark.parametrize("untied", [False, True])
def test_upcast_computes_the_same_weights_in_fp32_and_gives_them_back(untied):
    model = random_model(tiny_config(tie_word_embeddings=not untied)).to_dtype(torch.bfloat16)
    ids = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    before = {name: (p.dtype, p.data_ptr()) for name, p in model.named_parameters()}
    fp32_copy = copy.deepcopy(model).to_dtype(torch.float32)  # what upcast must equal, at twice the memory
    with upcast(model):
        exact = model(ids).logits
        cache = model.new_cache()
        cached = torch.cat([model(ids[:, :5], cache=cache).logits] + [model(ids[:, t:t + 1], cache=cache).logits
                                                                     for t in range(5, 11)], dim=1)
    assert exact.dtype == torch.float32 and torch.equal(exact, fp32_copy(ids).logits)
    assert (cached - exact).abs().max() <= 1e-5  # the fp32 cache, too
    assert {name: (p.dtype, p.data_ptr()) for name, p in model.named_parameters()} == before  # the same tensors back
    assert model(ids).logits.dtype == torch.bfloat16


def decode(model, ids, prompt_len, shift=0):
    """Prefill, then one token at a time; `shift` breaks the decode's RoPE positions (a planted bug)."""
    cache = model.new_cache()
    out = [model(ids[:, :prompt_len], cache=cache).logits]
    for t in range(prompt_len, ids.shape[1]):
        out.append(model(ids[:, t:t + 1], cache=cache, position_ids=torch.full((ids.shape[0], 1), t + shift)).logits)
    return torch.cat(out, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cached_decode_equals_the_full_forward_within_what_the_dtype_promises(dtype):
    # Chapter 08's check, reduced to what bf16 can promise: the tolerance is measured on this very
    # model and input, and still catches a decode whose positions are off by one.
    model = random_model(tiny_config(layer_types=["conv", "full_attention"] * 2, hidden_size=64,
                                     num_attention_heads=4)).to_dtype(dtype)
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits

    def measure():
        with upcast(model):
            return model(ids).logits, full

    tol = tolerance(dtype, fp32=1e-5, measure=measure)
    assert tol.close(decode(model, ids, 8), full), f"{tol}; gap {tol.gap(decode(model, ids, 8), full):.3g}"
    broken = decode(model, ids, 8, shift=1)
    assert not tol.close(broken, full), f"{tol} hides a decode with shifted positions (gap {tol.gap(broken, full):.3g})"
    if dtype == torch.bfloat16:
        assert tol.atol > 1e-3 and "measured bf16 rounding" in str(tol)


def test_compare_greedy_skips_near_ties_and_stops_where_the_runs_part():
    logits = torch.tensor([[5.0, 1.0, 0.0], [2.0, 1.95, 0.0], [0.0, 3.0, 9.0], [4.0, 0.0, 0.0]])  # margins 4, 0.05, 6, 4
    theirs = [0, 0, 2, 0]
    same = compare_greedy([0, 0, 2, 0], theirs, logits, 0.1)  # threshold 0.2
    assert same.ok and (same.compared, same.near_ties, same.diverged_at) == (3, 1, None)
    assert str(same) == "compared 3 of 4 greedy tokens (top-2 margin above 0.2), 1 near-ties skipped: identical"
    tie = compare_greedy([0, 1, 0, 0], theirs, logits, 0.1)  # parts at the near-tie: fine, nothing after compared
    assert tie.ok and (tie.compared, tie.diverged_at) == (1, 1) and "a near-tie (margin 0.05)" in str(tie)
    real = compare_greedy([0, 0, 1, 0], theirs, logits, Tolerance(torch.bfloat16, 0.1, "measured"))
    assert not real.ok and real.diverged_at == 2 and "where the margin 6 is decisive" in str(real)
    assert compare_greedy([0, 0, 1], theirs, logits, 5.0).ok  # a noise of 5 could flip a margin of 6
    with pytest.raises(ValueError, match=r"logits: expected \(N, V\) with N >= 4"):
        compare_greedy(theirs, theirs, logits[:2], 0.1)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_padded_batch_gives_the_prompts_greedy_tokens_where_the_margin_is_decisive(dtype):
    # Chapter 00's check: one prompt alone and in a left-padded batch.
    model = random_model(tiny_config(hidden_size=64, num_attention_heads=4)).to_dtype(dtype)
    g = torch.Generator().manual_seed(2)
    prompt, other = (torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist() for n in (5, 13))
    (alone,) = generate(model, prompt, max_new_tokens=12, stop_token_ids=[])
    batched = generate(model, [prompt, other], max_new_tokens=12, stop_token_ids=[])[0]
    forced = model(torch.tensor([prompt + alone.new_ids])).logits[0, len(prompt) - 1:-1]  # (12, V)

    def measure():
        with upcast(model):
            return model(torch.tensor([prompt + alone.new_ids])).logits[0, len(prompt) - 1:-1], forced

    tol = tolerance(dtype, fp32=1e-4, measure=measure)
    result = compare_greedy(batched.new_ids, alone.new_ids, forced, tol)
    assert result.ok, str(result)
    assert result.compared >= 1, str(result)  # at least one position decided, or the check says nothing


# -------------------------------------------------------------------------------- the figures
def test_save_figure_writes_png_and_svg_the_same_each_time(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv(course.FIGURES_ENV, str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = course.save_figure(fig, "99_test")
    first = {p.suffix: p.read_bytes() for p in tmp_path.iterdir()}
    course.save_figure(fig, "99_test")
    plt.close(fig)
    assert png == tmp_path / "99_test.png" and set(first) == {".png", ".svg"}
    assert {p.suffix: p.read_bytes() for p in tmp_path.iterdir()} == first  # no dates, no random ids
    assert first[".png"].startswith(b"\x89PNG") and b"<svg" in first[".svg"]


def test_figures_go_to_the_working_folder_outside_a_checkout(tmp_path, clean_env):
    clean_env.delenv(course.FIGURES_ENV, raising=False)
    clean_env.setattr(course, "IN_REPOSITORY", False)  # installed from a wheel, as on Colab
    clean_env.chdir(tmp_path)
    assert course.figures_dir() == tmp_path / "figures"


def test_other_checkpoints_and_dtypes_do_not_overwrite_the_committed_figures(tmp_path, clean_env):
    """The committed figures are the shipped model's in fp32; any other run gets its own folder."""
    clean_env.setattr(course, "REPO_FIGURES", tmp_path / "figures")
    clean_env.setattr(course, "IN_REPOSITORY", True)
    clean_env.delenv(course.FIGURES_ENV, raising=False)
    big = tmp_path / "Big-Model"  # a checkpoint over 4 GB: bf16 is its default
    big.mkdir()
    (big / "model.safetensors.index.json").write_text('{"metadata": {"total_size": 5000000000}, "weight_map": {}}')
    cases = [(None, None, "figures"), (None, "float32", "figures"), (None, "bfloat16", "figures/tiny-lfm2-moe-bf16"),
             (str(big), None, "figures/Big-Model"), (str(big), "bfloat16", "figures/Big-Model"),
             (str(big), "float32", "figures/Big-Model-fp32")]
    for model, dtype, expected in cases:
        for env, value in ((course.MODEL_ENV, model), (course.DTYPE_ENV, dtype)):
            if value is None:
                clean_env.delenv(env, raising=False)
            else:
                clean_env.setenv(env, value)
        assert course.figures_dir() == tmp_path / expected, (model, dtype)


def test_a_test_run_leaves_the_committed_figures_alone():
    """The chapters under nbval inherit this process's environment (conftest.py): their figures must
    not land in figures/, which only `python -m lfm2_edu.figures build` redraws."""
    folder = course.figures_dir().resolve()
    assert course.REPO_FIGURES.resolve() not in (folder, *folder.parents), f"a test run saves figures into {folder}"
