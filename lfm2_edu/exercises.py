"""Exercise checks for every chapter: "right", or "not yet" and what differs, never the answer.

`check(answer, expected, ...)` compares a student's answer with the expected one and prints
`right` or `not yet: <what differs>`: the type, the number of items, the shape, the dtype, or the
first differing position with the student's own value there. It never prints the expected value,
nor how far off the answer is (the answer plus that distance would give it away).

What it compares, by the kind of the expected value:
- a number: a float within `atol + rtol * |expected|` (a tolerance must be stated), an int or
  bool exactly; a string or bytes exactly; a set as a set (a list or tensor answer is read as one);
- a tensor, numpy array or list of numbers: shape, then dtype (for tensor answers), then every
  value, integers exactly and floats within the tolerance;
- a tuple or dict: item by item; a function: the student's function against it, on `inputs`.

Where the expected answers live. A chapter's check cell must not contain its answer, so the
expected value is computed by a function in the package (lfm2_edu/answers.py), registered under
the exercise's key, and the chapter passes it what it needs:

    @exercise("09.1")                                            # lfm2_edu/answers.py
    def _(table, layer, k):
        return int(routing.selection_margin(table.layer(layer)["selection_scores"], k).argmin())

    check_exercise("09.1", answer_1, table=table, layer=layer, k=k)      # the chapter's check cell

Computed rather than stored (or stored hashed): the answers depend on the checkpoint and dtype the
chapter runs on (LFM2_EDU_MODEL, LFM2_EDU_DTYPE), which a stored value cannot follow, and a hash
can neither accept "within 1e-4" nor say where two tensors differ. The solutions call the same
check_exercise, so a stale solution or a wrong expected function fails when the chapters run.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .course import Tolerance

NOT_ANSWERED = None  # what an answer cell holds until the student fills it in


@dataclass(frozen=True)
class Expected:
    """An expected value with the tolerance of this very run (e.g. measured for bf16)."""

    value: Any
    atol: float | Tolerance | None = None
    rtol: float = 0.0


@dataclass(frozen=True)
class Exercise:
    key: str  # "NN.i": chapter NN, exercise i
    expected: Callable[..., Any]  # computes the expected value from what the chapter passes
    atol: float | None
    rtol: float
    inputs: Callable[..., Sequence] | None  # for a function to write: the inputs it is tried on


EXERCISES: dict[str, Exercise] = {}


def exercise(key: str, *, atol: float | None = None, rtol: float = 0.0,
             inputs: Callable[..., Sequence] | None = None):
    """Register the function computing exercise `key`'s expected value (a decorator).

    atol / rtol: the tolerance for float answers (the expected function may instead return an
    `Expected` with a tolerance measured at run time). inputs: for an exercise whose answer is a
    function, a function of the same context returning the inputs both functions are called on.
    """
    if not isinstance(key, str) or not key.replace(".", "").isdigit() or key.count(".") != 1:
        raise ValueError(f"exercise key: expected 'NN.i' (chapter, exercise), found {key!r}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if key in EXERCISES:
            raise ValueError(f"exercise {key}: expected one expected-value function, found a second")
        EXERCISES[key] = Exercise(key, fn, atol, rtol, inputs)
        return fn

    return register


def check_exercise(key: str, answer: Any, **context: Any) -> bool | None:
    """Check the answer to exercise `key` against its registered expected value; print the verdict."""
    from . import answers  # noqa: F401  (registers the chapters' exercises)

    if key not in EXERCISES:
        raise KeyError(f"exercise: expected one of {sorted(EXERCISES)}, found {key!r}")
    ex = EXERCISES[key]
    if answer is NOT_ANSWERED:
        return check(answer, None, name=f"Exercise {key}")  # the expected value is not even computed
    expected, atol, rtol = ex.expected(**context), ex.atol, ex.rtol
    if isinstance(expected, Expected):
        expected, atol, rtol = expected.value, expected.atol, expected.rtol
    inputs = ex.inputs(**context) if ex.inputs is not None else None
    return check(answer, expected, atol=atol, rtol=rtol, inputs=inputs, name=f"Exercise {key}")


def confirm(key: str, solution: Any, wrong: Any, **context: Any) -> None:
    """What a solutions notebook runs for each exercise: the solution passes its check and a wrong
    answer (a likely mistake) does not. Raises AssertionError otherwise, so a stale solution or a
    check that cannot fail breaks the solutions' run."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the verdicts themselves are not the point here
        right, rejected = check_exercise(key, solution, **context), check_exercise(key, wrong, **context)
    assert right is True, f"exercise {key}: the solution does not pass its own check"
    assert rejected is False, f"exercise {key}: the check accepts a wrong answer"
    print(f"exercise {key}: the solution passes, a wrong answer does not")


def check(answer: Any, expected: Any, *, atol: float | Tolerance | None = None, rtol: float = 0.0,
          inputs: Sequence | None = None, exact_dtype: bool = True, name: str = "answer") -> bool | None:
    """Print `<name>: right`, `<name>: not yet: <what differs>`, or `not answered yet` (None).

    Returns True, False, or None for an unanswered exercise, so a solutions cell can assert it.
    """
    if answer is NOT_ANSWERED:
        print(f"{name}: not answered yet")
        return None
    why = difference(answer, expected, atol=atol, rtol=rtol, inputs=inputs, exact_dtype=exact_dtype)
    print(f"{name}: right" if why is None else f"{name}: not yet: {why}")
    return why is None


def difference(answer: Any, expected: Any, *, atol: float | Tolerance | None = None, rtol: float = 0.0,
               inputs: Sequence | None = None, exact_dtype: bool = True) -> str | None:
    """None if `answer` is right, else what differs, in words that never hold the expected value."""
    atol = atol.atol if isinstance(atol, Tolerance) else atol
    again = dict(atol=atol, rtol=rtol, exact_dtype=exact_dtype)
    if inputs is not None or (callable(expected) and not isinstance(expected, (torch.Tensor, np.ndarray))):
        return _function_difference(answer, expected, inputs, again)
    if isinstance(expected, torch.Tensor) and expected.dim() == 0:
        expected = expected.item()  # a 0-d tensor is a number
    if isinstance(expected, (bool, np.bool_)):
        if not _is_bool(answer):
            return f"expected True or False, found {_kind(answer)}"
        return None if bool(_scalar(answer)) == bool(expected) else "that is not the answer (a yes/no question: think again)"
    if isinstance(expected, (numbers.Integral, np.integer)):
        if not _is_int(answer):
            return f"expected a whole number (int), found {_kind(answer)}"
        return None if int(_scalar(answer)) == int(expected) else f"{int(_scalar(answer))} is not the expected number"
    if isinstance(expected, (numbers.Real, np.floating)):
        if not (_is_int(answer) or _is_float(answer)):
            return f"expected a number, found {_kind(answer)}"
        a, e = float(_scalar(answer)), float(expected)
        if math.isnan(a) and not math.isnan(e):
            return "your number is NaN"
        return None if _within(a, e, atol, rtol) else f"{a:.6g} is not within the tolerance {_tol(atol, rtol)} of the answer"
    if isinstance(expected, (str, bytes)):
        return _text_difference(answer, expected)
    if isinstance(expected, (set, frozenset)):
        return _set_difference(answer, expected)
    if isinstance(expected, tuple) or isinstance(expected, Mapping):
        return _items_difference(answer, expected, again)
    if isinstance(expected, (torch.Tensor, np.ndarray, list)):
        return _tensor_difference(answer, expected, atol, rtol, exact_dtype)
    raise TypeError(f"check: expected a number, string, set, tensor, tuple, dict or function as the expected value, "
                    f"found {type(expected).__name__}")


# ----------------------------------------------------------------------------- kinds of answer
def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    name = type(x).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _scalar(x: Any) -> Any:
    return x.item() if isinstance(x, (torch.Tensor, np.ndarray)) else x


def _is_bool(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_)) or (isinstance(x, torch.Tensor) and x.dim() == 0 and x.dtype == torch.bool)


def _is_int(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() == 0 and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    return isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_float(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() == 0 and x.is_floating_point()
    return isinstance(x, (float, np.floating))


def _within(a: float, e: float, atol: float | None, rtol: float) -> bool:
    if atol is None:
        raise TypeError("check: comparing floats needs a stated tolerance: pass atol= (and rtol=) for this dtype")
    return abs(a - e) <= atol + rtol * abs(e) or (math.isnan(a) and math.isnan(e))


def _tol(atol: float | None, rtol: float) -> str:
    return f"{atol:g}" + (f" + {rtol:g} x |answer|" if rtol else "")


# ----------------------------------------------------------------------------- compound answers
def _text_difference(answer: Any, expected: str | bytes) -> str | None:
    kind, name, unit = ("bytes", "bytes", "byte") if isinstance(expected, bytes) else ("a string", "text", "character")
    if not isinstance(answer, type(expected)):
        return f"expected {kind}, found {_kind(answer)}"
    if answer == expected:
        return None
    first = next((i for i, (a, e) in enumerate(zip(answer, expected)) if a != e), None)
    if first is None:
        return f"your {name} {'are' if name == 'bytes' else 'is'} {'shorter' if len(answer) < len(expected) else 'longer'} than the answer, the start agrees"
    return f"your {name} differ{'' if name == 'bytes' else 's'} from the answer at {unit} {first} (yours: {answer[first:first + 1]!r})"


def _set_difference(answer: Any, expected: set) -> str | None:
    if isinstance(answer, torch.Tensor):
        answer = answer.flatten().tolist()
    if not isinstance(answer, (set, frozenset, list, tuple)):
        return f"expected a set (or a list of its elements), found {_kind(answer)}"
    mine = {_scalar(x) for x in answer}
    extra, missing = len(mine - expected), len(expected - mine)
    if not extra and not missing:
        return None
    parts = ([f"{extra} of your {len(mine)} elements are not in the answer"] if extra else []) + \
            ([f"{missing} element{'s are' if missing > 1 else ' is'} missing"] if missing else [])
    return ", ".join(parts)


def _items_difference(answer: Any, expected: tuple | Mapping, again: dict) -> str | None:
    if isinstance(expected, Mapping):
        if not isinstance(answer, Mapping):
            return f"expected a dict, found {_kind(answer)}"
        unexpected = [k for k in answer if k not in expected]
        missing = sum(k not in answer for k in expected)
        if unexpected or missing:
            return ", ".join(([f"keys not in the answer: {unexpected}"] if unexpected else [])
                             + ([f"{missing} key{'s' if missing > 1 else ''} missing"] if missing else []))
        pairs = [(f"[{k!r}]", answer[k], expected[k]) for k in expected]
    else:
        if not isinstance(answer, (tuple, list)):
            return f"expected a tuple of {len(expected)} items, found {_kind(answer)}"
        if len(answer) != len(expected):
            return f"expected {len(expected)} items, found {len(answer)}"
        pairs = [(f"item {i}", a, e) for i, (a, e) in enumerate(zip(answer, expected))]
    for where, a, e in pairs:
        why = difference(a, e, **again)
        if why is not None:
            return f"{where}: {why}"
    return None


def _tensor_difference(answer: Any, expected: Any, atol: float | None, rtol: float, exact_dtype: bool) -> str | None:
    e = torch.as_tensor(expected).detach().cpu()
    if isinstance(answer, torch.Tensor):
        a = answer.detach().cpu()
        if tuple(a.shape) == tuple(e.shape) and exact_dtype and a.dtype != e.dtype:
            return f"dtype {a.dtype}, expected {e.dtype}"
    else:
        try:  # a list or numpy array of numbers: read in the expected dtype
            a = torch.as_tensor(np.asarray(answer) if isinstance(answer, np.ndarray) else answer, dtype=e.dtype)
        except (TypeError, ValueError, RuntimeError):
            return f"expected a tensor (or a list of numbers) of shape {tuple(e.shape)}, found {_kind(answer)}"
    if tuple(a.shape) != tuple(e.shape):
        return f"shape {tuple(a.shape)}, expected {tuple(e.shape)}"
    if e.is_floating_point():
        if atol is None:
            raise TypeError("check: comparing floats needs a stated tolerance: pass atol= (and rtol=) for this dtype")
        a64, e64 = a.double(), e.double()
        bad = ~((a64 - e64).abs() <= atol + rtol * e64.abs()) & ~(a64.isnan() & e64.isnan()) & (a64 != e64)  # equal infinities agree
        how = f"within the tolerance {_tol(atol, rtol)}"
    else:
        bad = a != e
        how = "exactly"
    if not bad.any():
        return None
    first = tuple(int(i) for i in bad.nonzero()[0])
    value = a[first].item()
    shown = f"{value:.6g}" if isinstance(value, float) else str(value)
    return (f"{int(bad.sum())} of {bad.numel()} values differ ({how}); the first at index "
            f"{first[0] if len(first) == 1 else first}, where yours is {shown}")


def _function_difference(answer: Any, expected: Any, inputs: Sequence | None, again: dict) -> str | None:
    if not callable(expected) or inputs is None or not len(inputs):
        raise TypeError("check: a function is checked against a reference function on inputs: pass "
                        "expected=<the reference function> and inputs=[args, ...]")
    if not callable(answer):
        return f"expected a function, found {_kind(answer)}"
    for n, args in enumerate(inputs):
        args, kwargs = ((), args) if isinstance(args, Mapping) else (args if isinstance(args, tuple) else (args,), {})
        want = expected(*copy.deepcopy(args), **copy.deepcopy(kwargs))  # copies: a function may write to its inputs
        try:
            got = answer(*copy.deepcopy(args), **copy.deepcopy(kwargs))
        except Exception as err:  # the student's code: say what it raised, where
            return f"on input {n + 1} of {len(inputs)}, your function raised {type(err).__name__}: {err}"
        why = difference(got, want, **again)
        if why is not None:
            return f"on input {n + 1} of {len(inputs)}, {why}"
    return None
