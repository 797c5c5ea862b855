"""Arithmetic for the shipped models: the problems they train on, and how well they answer in chat.

The training corpus has sums, differences and products, as lines of equations ("47 + 25 = 72")
and as chat turns. In chat the model adds the way it is taught at school, column by column from
the units, and then gives the result:

    What is 48 + 86?   ->   8 + 6 = 14; 4 + 8 + 1 = 13; 134

A model this small learns that far sooner than a one-step answer, in which every digit of the
result depends on all four digits of the question ("scratchpad" formats make arithmetic much
more sample-efficient for small transformers: Lee et al. 2023, "Teaching Arithmetic to Small
Transformers"). Differences and products are answered with the result alone.

A share of the additions and subtractions of two numbers below 100 is held out of the corpus
entirely (chosen by a hash of the problem, so on every machine the same ones): a model is graded
on questions it has never seen, not on memorised ones.

    python -m lfm2_edu.tiny.arithmetic [--model tiny-lfm2-moe] [--questions 200]

asks each kind of question in chat, decodes greedily, and prints the share answered exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
from dataclasses import dataclass

import torch

SMALL = 100  # "two numbers below 100": the range the held-out questions are drawn from
HELDOUT_SHARE = 0.1  # of the small additions and subtractions, never in the corpus


def _hash_share(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") / 2**32


def is_heldout(a: int, op: str, b: int) -> bool:
    """True for the small additions/subtractions kept out of every training document."""
    return op in "+-" and 0 <= a < SMALL and 0 <= b < SMALL and _hash_share(f"{a} {op} {b}") < HELDOUT_SHARE


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def equation(a: int, op: str, b: int) -> str:
    return f"{a} {op} {b} = {solve(a, op, b)}"


# What the problems are: mostly sums of two numbers below 100, the skill the chat is graded on.
OP_WEIGHTS = {"+": 0.75, "-": 0.15, "*": 0.10}
SMALL_SHARE = 0.85  # of the sums and differences, two numbers below 100; the rest up to 999


def sample_problem(rng: random.Random) -> tuple[int, str, int]:
    """One training problem (OP_WEIGHTS, SMALL_SHARE); products by 0..12; never a held-out one."""
    while True:
        op = rng.choices(list(OP_WEIGHTS), weights=list(OP_WEIGHTS.values()))[0]
        if op == "*":
            a, b = rng.randint(0, 99), rng.randint(0, 12)
        elif rng.random() < SMALL_SHARE:
            a, b = rng.randint(0, SMALL - 1), rng.randint(0, SMALL - 1)
        else:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
        if not is_heldout(a, op, b):
            return a, op, b


def chat_question(a: int, op: str, b: int) -> str:
    return f"What is {a} {op} {b}?"


def column_addition(a: int, b: int) -> str:
    """The worked answer to a + b (a, b >= 0): one step per column from the units, the carry
    added in, then the result. 48 + 86 -> "8 + 6 = 14; 4 + 8 + 1 = 13; 134"."""
    steps, carry = [], 0
    for column in range(max(len(str(a)), len(str(b)))):
        x, y = a // 10**column % 10, b // 10**column % 10
        total = x + y + carry
        steps.append(f"{x} + {y} + {carry} = {total}" if carry else f"{x} + {y} = {total}")
        carry = total // 10
    return "; ".join(steps + [str(a + b)])


def chat_answer(a: int, op: str, b: int) -> str:
    """What the assistant says: the worked column addition for a sum, the result otherwise."""
    return column_addition(a, b) if op == "+" and a >= 0 and b >= 0 else str(solve(a, op, b))


def chat_turn(a: int, op: str, b: int) -> str:
    return (f"<|im_start|>user\n{chat_question(a, op, b)}<|im_end|>\n"
            f"<|im_start|>assistant\n{chat_answer(a, op, b)}<|im_end|>")


# ------------------------------------------------------------------------------------ grading
@dataclass
class Kind:
    name: str
    op: str
    low: int
    high: int  # operands drawn from low..high (inclusive)
    heldout: bool  # only problems that are in no training document


KINDS = (
    Kind("addition, a, b < 100 (held out)", "+", 0, SMALL - 1, True),
    Kind("subtraction, a, b < 100 (held out)", "-", 0, SMALL - 1, True),
    Kind("addition, 100 <= a, b <= 999", "+", 100, 999, False),
    Kind("multiplication, a < 100, b <= 12", "*", 0, 99, False),
)


def questions(kind: Kind, n: int, seed: int = 0) -> list[tuple[int, str, int]]:
    """n distinct problems of one kind, seeded (the held-out kinds draw from the held-out set)."""
    rng = random.Random(f"{seed}:{kind.name}")
    if kind.heldout:
        pool = [(a, kind.op, b) for a in range(kind.low, kind.high + 1) for b in range(kind.low, kind.high + 1)
                if is_heldout(a, kind.op, b)]
        return rng.sample(pool, min(n, len(pool)))
    high_b = 12 if kind.op == "*" else kind.high
    low_b = 0 if kind.op == "*" else kind.low
    picked: set[tuple[int, str, int]] = set()
    while len(picked) < n:
        picked.add((rng.randint(kind.low, kind.high), kind.op, rng.randint(low_b, high_b)))
    return sorted(picked)


NUMBER = re.compile(r"^\s*(-?\d+)\s*$")


def parse_answer(text: str) -> int | None:
    """The result of an answer: the number after its last ";" (or the whole answer, when it has no
    worked steps); None when that is not a number."""
    match = NUMBER.match(text.split(";")[-1])
    return int(match.group(1)) if match else None


@torch.no_grad()
def grade(model, tokenizer, problems: list[tuple[int, str, int]], batch_size: int = 50) -> dict:
    """Ask every problem in chat, greedy; -> {"correct": n, "total": n, "accuracy": share,
    "examples": [(question, answer text, right?)] for the first few}."""
    from ..generate import generate

    correct, examples = 0, []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": chat_question(*p)}],
                                                 add_generation_prompt=True) for p in chunk]
        for p, result in zip(chunk, generate(model, prompts, max_new_tokens=48)):
            text = tokenizer.decode(result.new_ids, skip_special_tokens=True)
            right = parse_answer(text) == solve(*p)
            correct += right
            if len(examples) < 5:
                examples.append((chat_question(*p), text.strip(), right))
    return {"correct": correct, "total": len(problems), "accuracy": correct / max(1, len(problems)),
            "examples": examples}


def report(model, tokenizer, n: int = 200, seed: int = 0) -> dict[str, dict]:
    """Every kind of question, n of each: kind name -> grade()."""
    return {kind.name: grade(model, tokenizer, questions(kind, n, seed)) for kind in KINDS}


def main(argv: list[str] | None = None) -> int:
    from ..checkpoint import SHIPPED_MODEL, load_model
    from ..tokenizer import load_tokenizer

    parser = argparse.ArgumentParser(description="Grade a model's chat answers to arithmetic questions.")
    parser.add_argument("--model", default=SHIPPED_MODEL, help="checkpoint name, folder or hub id")
    parser.add_argument("--questions", type=int, default=200, help="questions of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, dtype=torch.float32), load_tokenizer(args.model)
    print(f"{args.model}: greedy chat answers, {args.questions} questions of each kind")
    for name, result in report(model, tokenizer, args.questions, args.seed).items():
        print(f"  {name:<38} {result['correct']:>4}/{result['total']:<4} = {result['accuracy']:6.1%}"
              f"   e.g. {result['examples'][0][0]!r} -> {result['examples'][0][1]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
