"""The write-it-yourself track: the grader in both directions.

The stubs of student/ must each be reported "not implemented yet" with what to write; the
reference solutions (solutions/student/) must pass every grade; and a solution with a planted
mistake must be reported failed, naming its block and the first tensor that differs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lfm2_edu.swap import SWAPPABLE
from reference import require_transformers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # student/ and solutions/ live at the top of the repository

from student import grade  # noqa: E402

STUBS, SOLUTIONS = ROOT / "student", ROOT / "solutions" / "student"
FILES = sorted({b.module for b in grade.BLOCKS})
needs_solutions = pytest.mark.skipif(not SOLUTIONS.is_dir(), reason="solutions/ is not in this copy "
                                     "(instructors remove it from the students' copy)")


# -------------------------------------------------------------------------- stubs and solutions
def test_every_swappable_block_has_a_stub_and_is_graded():
    assert sorted(name for b in grade.BLOCKS for name in b.swaps) == sorted(SWAPPABLE)


@needs_solutions
@pytest.mark.parametrize("file", FILES)
def test_solutions_have_the_stubs_interfaces(file):
    """Each public class and function of a stub file is in its solution, with the same parameters."""
    stub, solution = importlib.import_module(f"student.{file}"), importlib.import_module(f"solutions.student.{file}")
    local = [(n, v) for n, v in vars(stub).items()
             if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == stub.__name__]
    assert local, f"student/{file}.py defines nothing"
    for name, value in local:
        assert hasattr(solution, name), f"solutions/student/{file}.py has no {name}"
        pairs = [(name, value, getattr(solution, name))]
        if inspect.isclass(value):
            pairs += [(f"{name}.{m}", getattr(value, m), getattr(getattr(solution, name), m, None))
                      for m, v in vars(value).items() if callable(v) and (m == "__init__" or not m.startswith("_"))]
        for label, ours, theirs in pairs:
            assert theirs is not None, f"solutions/student/{file}.py has no {label}"
            assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), label


def test_chapters_select_their_blocks_and_bad_chapters_are_clear_errors():
    assert [b.name for b in grade.select(["3"])] == ["RMSNorm", "RoPE"]
    assert [b.name for b in grade.select(["04", "10"])] == ["ShortConv", "update_expert_bias"]
    with pytest.raises(grade.GradeError, match=r"--chapter: expected one of 03, 04, 05, 06, 08, 10 \(the chapters "
                                               r"with a block to write\), found '07'"):
        grade.select(["07"])


def test_an_unknown_blocks_package_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        grade.main(["--blocks", "no_such_package"])
    assert "--blocks: expected an importable package such as student or solutions.student, found " \
           "'no_such_package'" in capsys.readouterr().err


def test_first_difference_says_where_and_what():
    expected = torch.zeros(2, 3, 4)
    got = expected.clone()
    got[1, 2, 0] = 0.5
    assert grade.first_difference("x", got, expected) == "x at index (1, 2, 0): got 0.5, expected 0 (1 of 24 values differ)"
    assert grade.first_difference("x", expected + 1e-7, expected) is None  # rounding
    assert grade.first_difference("x", expected[0], expected) == "x: shape (3, 4), expected (2, 3, 4)"
    assert grade.first_difference("x", expected.double(), expected) == "x: dtype torch.float64, expected torch.float32"
    masked = torch.tensor([[float("-inf"), 1.0]])
    assert grade.first_difference("z", masked.clone(), masked) is None  # -inf where expected
    assert grade.first_difference("z", torch.tensor([[0.0, 1.0]]), masked).startswith("z at index (0, 0): got 0, expected -inf")


# ------------------------------------------------------------------------------------ the grader
def run_grader(*args, pythonpath: Path | None = None) -> tuple[int, dict[str, str], str]:
    """Run `python -m student.grade` as a student would; (exit code, block -> verdict, output)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (pythonpath, ROOT) if p)}
    result = subprocess.run([sys.executable, "-m", "student.grade", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=3600)
    verdicts = dict(re.findall(r"^\d\d  (\S+) +(.+)$", result.stdout, flags=re.M))
    return result.returncode, verdicts, result.stdout + result.stderr


def plant(tmp_path: Path, name: str, mistakes: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of the solutions as package `name`, with each (file: [(right, wrong)]) mistake made."""
    package = tmp_path / name
    shutil.copytree(SOLUTIONS, package)
    for file, edits in mistakes.items():
        path = package / f"{file}.py"
        text = path.read_text()
        for right, wrong in edits:
            assert text.count(right) == 1, f"solutions/student/{file}.py: expected {right!r} once, to plant a mistake"
            text = text.replace(right, wrong)
        path.write_text(text)
    return tmp_path


# What each stub's grade must ask for first (RotaryEmbedding() needs rope_inv_freq before anything).
FIRST_TODO = {"RMSNorm": ("RMSNorm.forward", "norm.py", "03"), "RoPE": ("rope_inv_freq", "rope.py", "03"),
              "ShortConv": ("ShortConv.forward", "conv.py", "04"),
              "GroupedQueryAttention": ("GroupedQueryAttention.forward", "attention.py", "05"),
              "SparseMoE": ("SparseMoE.forward", "moe.py", "06"), "apply_min_p": ("apply_min_p", "generate.py", "08"),
              "update_expert_bias": ("update_expert_bias", "train.py", "10")}


@pytest.mark.slow
def test_the_stubs_are_each_not_implemented_yet():
    require_transformers()  # the grades run the parity tests
    written = [f"student/{file}" for what, file, _ in FIRST_TODO.values()
               if f'todo("{what}", "{file}"' not in (STUBS / file).read_text()]
    if written:  # a student's copy at work: this check is for the kit as shipped
        pytest.skip(f"{', '.join(written)} hold code of their own now, not the kit's stubs; grade it with make grade")
    code, verdicts, output = run_grader()
    expected = {block: f"{what} in student/{file} (chapter {chapter})" for block, (what, file, chapter) in FIRST_TODO.items()}
    assert verdicts == {block: f"not implemented yet: write {what}" for block, what in expected.items()}, output
    assert code == 1 and "0 of 7 blocks passed" in output


@needs_solutions
@pytest.mark.slow
def test_the_solutions_pass_every_grade():
    require_transformers()
    code, verdicts, output = run_grader("--blocks", "solutions.student")
    assert sorted(verdicts) == sorted(b.name for b in grade.BLOCKS), output
    for block, verdict in verdicts.items():
        assert re.fullmatch(r"passed \(\d+ tests?\)", verdict), f"{block}: {verdict}\n{output}"
    assert code == 0 and "7 of 7 blocks passed" in output


# One planted mistake per block (each block is graded alone, so they do not hide one another),
# and the first tensor that must be named for it.
PLANTED = {
    "norm": ([("return self.weight * normed", "return (1 + self.weight) * normed")],
             "RMSNorm", "layers.0.operator_norm at index"),
    "rope": ([("return torch.cat((-x2, x1), dim=-1)", "return torch.cat((x2, -x1), dim=-1)")],
             "RoPE", "layers.1.attn.q at index"),
    "conv": ([("B, C, x = self.in_proj(h)", "C, B, x = self.in_proj(h)")], "ShortConv", "layers.0.conv.B at index"),
    "attention": ([("k = k.repeat_interleave(self.group_size, dim=1)", "k = k.repeat(1, self.group_size, 1, 1)"),
                   ("v = v.repeat_interleave(self.group_size, dim=1)", "v = v.repeat(1, self.group_size, 1, 1)")],
                  "GroupedQueryAttention", "layers.1.attn.probs at index"),
    "moe": ([("scores = torch.sigmoid(logits)", "scores = torch.softmax(logits, dim=-1)")],
            "SparseMoE", "layers.1.moe.scores at index"),
    "generate": ([("remove = probs < min_p * probs.amax(dim=-1, keepdim=True)", "remove = probs < min_p")],
                 "apply_min_p", "apply_min_p(logits, min_p=0.05) at index"),
    "train": ([("torch.sign(load.mean() - load)", "torch.sign(load - load.mean())")],
              "update_expert_bias", "layers.1.feed_forward.expert_bias after update_expert_bias"),
}
# Mistakes hidden behind those above when in the same block: a second planted package.
PLANTED_MORE = {
    "moe": ([("weights = scores.gather(-1, selected)", "weights = selection_scores.gather(-1, selected)")],
            "SparseMoE", "layers.1.moe.weights at index"),  # the expert bias in the mixing weights
    "conv": ([("return y, window[:, :, 1:]", "return y, window[:, :, :-1]")],  # the state keeps the wrong values
             "ShortConv", "layers.0.conv.conv_out at index"),
}


@needs_solutions
@pytest.mark.slow
@pytest.mark.parametrize("planted", [PLANTED, PLANTED_MORE], ids=["one-per-block", "more"])
def test_planted_mistakes_are_reported_failed_with_the_first_differing_tensor(tmp_path, planted):
    require_transformers()
    folder = plant(tmp_path, "planted", {file: edits for file, (edits, _, _) in planted.items()})
    chapters = sorted({b.chapter for b in grade.BLOCKS if b.module in planted})
    code, verdicts, output = run_grader("--blocks", "planted", *[a for ch in chapters for a in ("--chapter", ch)],
                                        pythonpath=folder)
    assert code == 1, output
    for _, block, tensor in planted.values():
        verdict = verdicts.get(block, "")
        assert verdict.startswith(f"failed: {tensor}") and "got " in verdict and "expected " in verdict, \
            f"{block}: {verdict!r}\n{output}"
        assert "(first failing test: " in verdict
    if planted is PLANTED_MORE:
        assert "in cached decoding after a prefill of 3 tokens, at position 4" in verdicts["ShortConv"], output
