"""The grader of the write-it-yourself track: each of your blocks, swapped into the real model,
under the package's own tests.

    python -m student.grade                    # every block        (make grade)
    python -m student.grade --chapter 04       # one chapter's      (make grade CH=04)
    python -m student.grade -v --chapter 04    # ... and the tests' own output
    python -m student.grade --blocks solutions.student     # the reference solutions

For each block, lfm2_edu.swap.swapped puts your class or function in place of the package's and
the tests that exercise it run: parity with transformers on random models (every hidden state,
the attention probabilities, the routing), cached decoding against the full forward pass, and
known inputs. One line per block says: passed; not implemented yet (and what to write); or
failed, with the first tensor where a model with your block differs from the package's model
on the same weights (found with lfm2_edu.trace.Capture), where, what you got and what was
expected, and the first failing test.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


@dataclass(frozen=True)
class Block:
    name: str
    chapter: str
    module: str  # its file in the graded package: student/<module>.py
    swaps: tuple[str, ...]  # what it replaces in lfm2_edu (names of lfm2_edu.swap.SWAPPABLE)
    tests: tuple[str, ...]  # pytest node ids under tests/
    keyword: str = ""  # a pytest -k expression that narrows them down
    compare: str = "model"  # how to find the first difference: "model", "min_p" or "expert_bias"


# Every hidden state and attention map against transformers on the parity matrix of configs,
# then cached decoding (conv states, keys and values, RoPE positions) against the full forward.
MODEL_TESTS = ("test_parity.py::test_hidden_states_and_attention_match_reference", "test_cache.py")
BLOCKS = (
    Block("RMSNorm", "03", "norm", ("RMSNorm",),
          MODEL_TESTS + ("test_parity.py::test_bf16_close_to_reference_bf16",)),
    Block("RoPE", "03", "rope", ("RotaryEmbedding", "apply_rope"), MODEL_TESTS),
    Block("ShortConv", "04", "conv", ("ShortConv",), MODEL_TESTS),
    Block("GroupedQueryAttention", "05", "attention", ("GroupedQueryAttention",), MODEL_TESTS),
    Block("SparseMoE", "06", "moe", ("SparseMoE",), ("test_parity.py::test_routing_matches_reference",) + MODEL_TESTS),
    # The processor alone, in generate.py's chain, and in seeded generation against transformers.
    Block("apply_min_p", "08", "generate", ("apply_min_p",), ("test_generate.py",),
          keyword="min_p and not bad_settings", compare="min_p"),
    Block("update_expert_bias", "10", "train", ("update_expert_bias",),
          ("test_train.py::test_bias_update_favours_underloaded_experts",), compare="expert_bias"),
)
CHAPTERS = sorted({b.chapter for b in BLOCKS})
# Differences below these are rounding (fp32: another order of the same operations).
ATOL, RTOL = 1e-5, 1e-4
BF16_ATOL = BF16_RTOL = 5e-2


class GradeError(ValueError):
    """The grader was asked for something it cannot do (a chapter without blocks, no such package)."""


# ------------------------------------------------------------------------------ running the tests
@dataclass
class Failure:
    test: str
    error: BaseException | None
    text: str  # pytest's report, when there is no exception object
    config: object = None  # the LFM2Config the failing test ran on, when it has one


@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # reasons
    errors: list[str] = field(default_factory=list)  # collection errors
    exit_code: int = 0


class _Collector:
    """A pytest plugin that keeps each test's outcome and, for a failure, the exception itself."""

    def __init__(self) -> None:
        self.outcome = Outcome()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.failed:
            error = call.excinfo.value if call.excinfo is not None else None
            self.outcome.failed.append(Failure(item.nodeid, error, report.longreprtext, _config_of(item)))
        elif report.skipped and report.when != "teardown":
            self.outcome.skipped.append(_skip_reason(report))
        elif report.passed and report.when == "call":
            self.outcome.passed.append(item.nodeid)
        return report

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.outcome.errors.append(report.longreprtext)
        elif report.skipped:
            self.outcome.skipped.append(_skip_reason(report))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _config_of(item):
    """The LFM2Config a parametrised test ran on: a `config` parameter, or a name in the module's CONFIGS."""
    from lfm2_edu import LFM2Config

    params = getattr(getattr(item, "callspec", None), "params", {})
    configs = getattr(getattr(item, "module", None), "CONFIGS", {})
    for value in params.values():
        if isinstance(value, LFM2Config):
            return value
        if isinstance(value, str) and isinstance(configs, dict) and isinstance(configs.get(value), LFM2Config):
            return configs[value]
    return None


def run_tests(block: Block, impl: dict, verbose: bool) -> Outcome:
    """Run the block's tests in this process with `impl` swapped in; stop at the first failure."""
    from lfm2_edu.swap import swapped

    # The test modules are imported afresh under the swap: a module from an earlier run would hold
    # the blocks (and the models it cached) of that run.
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().parent == TESTS:
            del sys.modules[name]
    args = [str(TESTS / t) for t in block.tests] + ["-x", "-p", "no:cacheprovider", "-o", "addopts=",
                                                   f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml")]
    args += ["-k", block.keyword] if block.keyword else []
    args += ["-q"] if verbose else ["-qq", "--no-header"]
    collector = _Collector()
    autoload = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # these tests need no plugin (nbval alone takes seconds to load)
    try:
        with swapped(**impl):
            collector.outcome.exit_code = int(pytest.main(args, plugins=[collector]))
    finally:
        if autoload is None:
            del os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = autoload
    return collector.outcome


# ---------------------------------------------------------------------------- the first difference
def _value(x) -> str:
    x = x.item()
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def first_difference(name: str, got, expected: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> str | None:
    """None if `got` equals `expected` (within rounding), else where and how they first differ."""
    if not isinstance(got, torch.Tensor):
        return f"{name}: expected a tensor, found {type(got).__name__}"
    if got.shape != expected.shape:
        return f"{name}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype != expected.dtype:
        return f"{name}: dtype {got.dtype}, expected {expected.dtype}"
    got, expected = got.detach().cpu(), expected.detach().cpu()
    if expected.is_floating_point():
        same = torch.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)  # equal infinities count as equal
    else:
        same = got == expected
    if bool(same.all()):
        return None
    index = tuple(int(i) for i in (~same).nonzero()[0])
    n = int((~same).sum())
    return (f"{name} at index {index}: got {_value(got[index])}, expected {_value(expected[index])} "
            f"({n} of {same.numel()} values differ)")


def _capture_runs(model, chunks, cached: bool, impl: dict):
    """Run `model` on each chunk of ids in turn (with a cache if `cached`), one Capture of everything
    per call: (the captures, the exception that stopped the runs or None)."""
    from lfm2_edu import Capture
    from lfm2_edu.swap import swapped

    captures, cache = [], model.new_cache() if cached else None
    with swapped(**impl):  # functions (apply_rope) are looked up while the model runs
        for ids in chunks:
            captures.append(Capture())
            try:
                model(ids, cache=cache, capture=captures[-1])
            except Exception as err:  # what was captured up to here still says where things went wrong
                return captures, err
    return captures, None


@torch.no_grad()
def compare_models(impl: dict, config) -> str | None:
    """The first capture point where a model with `impl` differs from the package's, same weights."""
    from lfm2_edu import LFM2Model
    from lfm2_edu.swap import swapped
    from test_cache import random_model  # the cache tests' random weights: norms and expert_bias too

    package = random_model(config)
    with swapped(**impl):
        yours = LFM2Model(config).eval()
    try:
        yours.load_state_dict(package.state_dict(), strict=True)
    except RuntimeError as err:
        return f"the checkpoint's weights do not load into your block: {str(err).splitlines()[-1].strip()}"
    ids = torch.randint(0, config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))  # (B, T)
    prefill = 3
    decoding = [ids[:, :prefill]] + [ids[:, t:t + 1] for t in range(prefill, ids.shape[1])]
    bf16 = (copy.deepcopy(package).to_dtype(torch.bfloat16), copy.deepcopy(yours).to_dtype(torch.bfloat16))
    runs = [  # (what, the package's model and yours, the chunks of ids fed in turn, with a cache?, tolerances)
        ("the full forward pass", (package, yours), [ids], False, ATOL, RTOL),
        (f"cached decoding after a prefill of {prefill} tokens", (package, yours), decoding, True, ATOL, RTOL),
        ("the bf16 forward pass", bf16, [ids], False, BF16_ATOL, BF16_RTOL),
    ]
    for what, (theirs, ours), chunks, cached, atol, rtol in runs:
        expected, _ = _capture_runs(theirs, chunks, cached, {})
        got, error = _capture_runs(ours, chunks, cached, impl)
        for step, (exp, out) in enumerate(zip(expected, got)):
            for name in exp.names():  # in the order the package computes them
                if name in out and (found := first_difference(name, out[name], exp[name], atol, rtol)):
                    if cached:
                        what += ", in the prefill" if step == 0 else f", at position {prefill + step - 1}"
                    return f"{found}, in {what}"
        if error is not None:
            raise error
    return None


@torch.no_grad()
def compare_min_p(yours, package) -> str | None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g) * 3  # (B, V)
    logits[0, 10:13] = logits[0].max() + 1  # a three-way tie at the top
    for min_p in (0.05, 0.15, 0.5, 1.0, 0.0):
        given = logits.clone()
        got = yours(given, min_p)
        if not torch.equal(given, logits):
            return f"apply_min_p(logits, min_p={min_p}) changed the logits it was given: return a new tensor instead"
        if found := first_difference(f"apply_min_p(logits, min_p={min_p})", got, package(logits.clone(), min_p)):
            return found
    return None


@torch.no_grad()
def compare_expert_bias(yours, package) -> str | None:
    from reference import tiny_config
    from test_cache import random_model

    config = tiny_config(num_experts=8)
    theirs = random_model(config)
    ours = copy.deepcopy(theirs)
    g = torch.Generator().manual_seed(0)
    moe_layers = [i for i in range(config.num_hidden_layers) if config.is_moe_layer(i)]
    loads = {i: torch.randint(0, 12, (config.num_experts,), generator=g) for i in moe_layers}  # tokens per expert
    loads[moe_layers[0]] = torch.tensor([10, 0, 5, 5, 3, 7, 5, 5])  # mean 5: some exactly at the mean
    yours(ours, loads, 0.01)
    package(theirs, loads, 0.01)
    for i in moe_layers:
        name = f"layers.{i}.feed_forward.expert_bias after update_expert_bias(model, loads, rate=0.01)"
        if found := first_difference(name, ours.layers[i].feed_forward.expert_bias, theirs.layers[i].feed_forward.expert_bias):
            return found
    return None


# ---------------------------------------------------------------------------------------- a grade
def _not_implemented(error: BaseException | None) -> NotImplementedError | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, NotImplementedError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _in_your_code(error: BaseException, package_dir: Path) -> str:
    """'KeyError: ... (student/conv.py:42, in forward)': the exception, where your code raised it."""
    text = str(error).strip()
    message = type(error).__name__ + (f": {text.splitlines()[0]}" if text else "")
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve().is_relative_to(package_dir)]
    if not frames:
        return message
    f = frames[-1]
    path = Path(f.filename).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return f"{message} ({shown}:{f.lineno}, in {f.name})"


def _difference(block: Block, impl: dict, failure: Failure) -> str | None:
    from lfm2_edu.swap import package_block
    from reference import tiny_config

    if block.compare == "min_p":
        return compare_min_p(impl["apply_min_p"], package_block("apply_min_p"))
    if block.compare == "expert_bias":
        return compare_expert_bias(impl["update_expert_bias"], package_block("update_expert_bias"))
    configs = [failure.config] if failure.config is not None else []
    for config in (tiny_config(), tiny_config(conv_bias=True, conv_L_cache=4, num_key_value_heads=1),
                   tiny_config(model_type="lfm2", layer_types=["full_attention", "conv", "conv", "full_attention"])):
        if config not in configs:
            configs.append(config)
    for config in configs:
        if found := compare_models(impl, config):
            return found
    return None


def grade_block(block: Block, package: str, verbose: bool = False) -> tuple[bool, str]:
    """(passed, the grade line's verdict) for one block of `package`."""
    from lfm2_edu.swap import SwapError, check_interface

    file = f"{package.replace('.', '/')}/{block.module}.py"
    try:
        module = importlib.import_module(f"{package}.{block.module}")
    except Exception as err:
        return False, f"failed: could not import {file}: {type(err).__name__}: {err}"
    package_dir = Path(module.__file__).resolve().parent
    missing = [name for name in block.swaps if not hasattr(module, name)]
    if missing:
        return False, f"failed: {file} defines no {' or '.join(missing)}"
    impl = {name: getattr(module, name) for name in block.swaps}
    try:
        for name, value in impl.items():
            check_interface(name, value)
    except SwapError as err:
        return False, f"failed: {err}"

    outcome = run_tests(block, impl, verbose)
    if outcome.errors:
        return False, f"failed: the tests could not be collected: {outcome.errors[0].strip().splitlines()[-1]}"
    if outcome.failed:
        failure = outcome.failed[0]
        if todo := _not_implemented(failure.error):
            return False, f"not implemented yet: {todo}"
        try:
            found = _difference(block, impl, failure)
        except Exception as err:  # raised by your code, before any tensor differed
            if todo := _not_implemented(err):
                return False, f"not implemented yet: {todo}"
            found = _in_your_code(err, package_dir)
        if found is None:  # no difference in these runs: the test's own words then
            if failure.error is not None and not isinstance(failure.error, AssertionError):
                found = _in_your_code(failure.error, package_dir)
            else:
                text = str(failure.error).strip() if failure.error is not None else failure.text.strip()
                found = text.splitlines()[0] if text else "the test failed"
        return False, f"failed: {found} (first failing test: {failure.test})"
    if outcome.exit_code not in (0, 5) or not outcome.passed:
        why = f"; skipped: {outcome.skipped[0]}" if outcome.skipped else ""
        return False, f"not graded: no test ran (pytest exit code {outcome.exit_code}{why})"
    skipped = f"; {len(outcome.skipped)} skipped: {outcome.skipped[0]}" if outcome.skipped else ""
    n = len(outcome.passed)
    return True, f"passed ({n} test{'' if n == 1 else 's'}{skipped})"


# ---------------------------------------------------------------------------------------- the CLI
def select(chapters: list[str] | None) -> list[Block]:
    if not chapters:
        return list(BLOCKS)
    wanted = []
    for chapter in chapters:
        number = chapter.strip().zfill(2)
        if number not in CHAPTERS:
            raise GradeError(f"--chapter: expected one of {', '.join(CHAPTERS)} (the chapters with a block "
                             f"to write), found {chapter!r}")
        wanted.append(number)
    return [b for b in BLOCKS if b.chapter in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m student.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapter", action="append", help=f"grade only this chapter's blocks ({', '.join(CHAPTERS)})")
    parser.add_argument("--blocks", default="student", help="the package with the blocks (default: student)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the tests' own output too")
    args = parser.parse_args(argv)
    try:
        blocks = select(args.chapter)
    except GradeError as err:
        parser.error(str(err))
    if not (TESTS / "test_parity.py").is_file():
        parser.error(f"the grader runs the repository's tests, expected them in {TESTS}, found no test_parity.py")
    for path in (ROOT, TESTS):  # the blocks' packages, and the tests' helpers (reference, test_cache)
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    try:
        importlib.import_module(args.blocks)
    except ImportError as err:
        parser.error(f"--blocks: expected an importable package such as student or solutions.student, "
                     f"found {args.blocks!r} ({type(err).__name__}: {err})")
    # These models are tiny: one thread is faster than several waiting for each other.
    torch.set_num_threads(1)

    start, passed = time.time(), 0
    print(f"Grading {args.blocks}: each block swapped into lfm2_edu, under its parity, cache and known-input tests")
    for block in blocks:
        with contextlib.redirect_stdout(sys.stdout if args.verbose else io.StringIO()):
            ok, verdict = grade_block(block, args.blocks, args.verbose)
        passed += ok
        print(f"{block.chapter}  {block.name:<22} {verdict}", flush=True)
    print(f"{passed} of {len(blocks)} blocks passed ({time.time() - start:.0f} s)")
    return 0 if passed == len(blocks) else 1


if __name__ == "__main__":
    sys.exit(main())
