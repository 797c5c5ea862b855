"""The exercise check: it accepts right answers, rejects wrong ones, says what differs, and never
prints the answer (nor how far off an answer is, which would give the answer away)."""

import math
import re

import numpy as np
import pytest
import torch

from lfm2_edu import LFM2Config, course, exercises, routing
from lfm2_edu.exercises import EXERCISES, Expected, check, check_exercise, difference, exercise


def verdict(answer, expected, capsys, **kw):
    result = check(answer, expected, name="Exercise", **kw)
    return result, capsys.readouterr().out.strip()


# ------------------------------------------------------------------------- accepts and rejects
RIGHT = [  # (answer, expected, tolerance)
    (0.73519461, 0.7351946, dict(atol=1e-6)),
    (3, 3.0, dict(atol=1e-9)),  # an int answer to a float question
    (torch.tensor(0.25), 0.25, dict(atol=0)),
    (np.float64(1.5), 1.5, dict(atol=0)),
    (7, 7, {}),
    (np.int64(7), 7, {}),
    (torch.tensor(7), torch.tensor(7), {}),  # argmin() and friends give 0-d tensors
    (True, True, {}),
    ("Oslo", "Oslo", {}),
    ({3, 1, 2}, {1, 2, 3}, {}),
    ([2, 3, 1], {1, 2, 3}, {}),  # chosen experts as a list: read as a set
    (torch.tensor([3, 1]), {1, 3}, {}),
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-7]), dict(atol=1e-6)),
    ([0.005, 0.105], torch.tensor([0.005, 0.105]), dict(atol=1e-6)),  # a list answer, read in the expected dtype
    (np.array([1, 2]), torch.tensor([1, 2]), {}),
    (torch.tensor([[1, 2]]), [[1, 2]], {}),
    ((4, 2.5000001), (4, 2.5), dict(atol=1e-4)),
    ([4, 2.5], (4, 2.5), dict(atol=1e-4)),
    ({"a": 1, "b": torch.ones(2)}, {"b": torch.ones(2), "a": 1}, dict(atol=0)),
    (torch.tensor(2.0), 2.0, dict(atol=course.Tolerance(torch.float32, 1e-6, "stated"))),
    (torch.tensor([0.5, -math.inf]), torch.tensor([0.5, -math.inf]), dict(atol=1e-6)),  # filtered logits: -inf agrees
]


@pytest.mark.parametrize("answer,expected,tol", RIGHT)
def test_right_answers_are_right(answer, expected, tol, capsys):
    assert verdict(answer, expected, capsys, **tol) == (True, "Exercise: right")


WRONG = [  # (answer, expected, tolerance, what the message must name)
    (0.7352, 0.7351946, dict(atol=1e-6), r"0\.7352 is not within the tolerance 1e-06 of the answer"),
    (0.7352, 0.7351946, dict(atol=1e-6, rtol=1e-6), r"not within the tolerance 1e-06 \+ 1e-06 x \|answer\|"),
    (float("nan"), 0.5, dict(atol=1), r"your number is NaN"),
    ("0.5", 0.5, dict(atol=1), r"expected a number, found a str"),
    (True, 1, {}, r"expected a whole number \(int\), found a bool"),
    (3.0, 3, {}, r"expected a whole number \(int\), found a float"),
    ([3], 3, {}, r"expected a whole number \(int\), found a list"),
    (torch.tensor(3.0), 3, {}, r"expected a whole number \(int\), found a tensor of shape \(\) and dtype torch.float32"),
    (8, 3, {}, r"8 is not the expected number"),
    (1, True, {}, r"expected True or False, found an int"),
    ("Olso", "Oslo", {}, r"differs from the answer at character 1 \(yours: 'l'\)"),
    ("Osl", "Oslo", {}, r"your text is shorter than the answer, the start agrees"),
    (48123, "48123", {}, r"expected a string, found an int"),
    (b" imbort", b" import", {}, r"your bytes differ from the answer at byte 3 \(yours: b'b'\)"),
    (b" im", b" import", {}, r"your bytes are shorter than the answer, the start agrees"),
    (" import", b" import", {}, r"expected bytes, found a str"),
    ({1, 2, 9}, {1, 2, 3}, {}, r"1 of your 3 elements are not in the answer, 1 element is missing"),
    ({1}, {1, 2, 3}, {}, r"2 elements are missing"),
    ("123", {1, 2, 3}, {}, r"expected a set \(or a list of its elements\), found a str"),
    (torch.ones(3, 4), torch.ones(4, 3), dict(atol=1), r"shape \(3, 4\), expected \(4, 3\)"),
    (torch.ones(2, dtype=torch.float64), torch.ones(2), dict(atol=1), r"dtype torch.float64, expected torch.float32"),
    (torch.tensor([1.0, 2.0, 3.5, 4.5]), torch.tensor([1.0, 2.0, 3.0, 4.0]), dict(atol=1e-3),
     r"2 of 4 values differ \(within the tolerance 0\.001\); the first at index 2, where yours is 3\.5"),
    (torch.tensor([[0, 1], [5, 3]]), torch.tensor([[0, 1], [2, 3]]), {},
     r"1 of 4 values differ \(exactly\); the first at index \(1, 0\), where yours is 5"),
    (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), dict(atol=1), r"the first at index 1, where yours is nan"),
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0, -math.inf]), dict(atol=1), r"the first at index 1, where yours is 2"),
    (torch.tensor([math.inf, 2.0]), torch.tensor([-math.inf, 2.0]), dict(atol=1), r"the first at index 0, where yours is inf"),
    ("a tensor", torch.zeros(2), dict(atol=1), r"expected a tensor \(or a list of numbers\) of shape \(2,\), found a str"),
    ((4, 2.6), (4, 2.5), dict(atol=1e-4), r"item 1: 2\.6 is not within the tolerance"),
    ((4,), (4, 2.5), dict(atol=1e-4), r"expected 2 items, found 1"),
    ({"a": 1, "c": 2}, {"a": 1, "b": 2}, {}, r"keys not in the answer: \['c'\], 1 key missing"),
    ({"a": 2}, {"a": 1}, {}, r"\['a'\]: 2 is not the expected number"),
]


@pytest.mark.parametrize("answer,expected,tol,message", WRONG)
def test_wrong_answers_say_what_differs(answer, expected, tol, message, capsys):
    result, out = verdict(answer, expected, capsys, **tol)
    assert result is False and out.startswith("Exercise: not yet: "), out
    assert re.search(message, out), out


def test_an_unanswered_exercise_is_neither_right_nor_wrong(capsys):
    assert verdict(None, 0.5, capsys, atol=1) == (None, "Exercise: not answered yet")


def test_floats_need_a_stated_tolerance():
    with pytest.raises(TypeError, match="comparing floats needs a stated tolerance"):
        difference(0.5, 0.5)
    with pytest.raises(TypeError, match="comparing floats needs a stated tolerance"):
        difference(torch.ones(2), torch.ones(2))


def test_a_dtype_can_be_left_unchecked():
    assert difference(torch.ones(2, dtype=torch.float64), torch.ones(2), atol=0, exact_dtype=False) is None


# ----------------------------------------------------------------------------------- functions
def rms_norm(x, w, eps):
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


INPUTS = [(torch.randn(3, 8, generator=torch.Generator().manual_seed(n)), torch.rand(8) + 0.5, 1e-5) for n in range(3)]


def test_a_function_is_checked_against_the_reference_on_inputs(capsys):
    assert verdict(rms_norm, rms_norm, capsys, inputs=INPUTS, atol=1e-6) == (True, "Exercise: right")

    def one_plus_w(x, w, eps):  # the classic mistake
        return rms_norm(x, 1 + w, eps)

    result, out = verdict(one_plus_w, rms_norm, capsys, inputs=INPUTS, atol=1e-6)
    assert result is False and re.search(r"on input 1 of 3, 24 of 24 values differ .* the first at index \(0, 0\)", out)

    def wrong_shape(x, w, eps):
        return rms_norm(x, w, eps).mean(-1)

    assert "on input 1 of 3, shape (3,), expected (3, 8)" in verdict(wrong_shape, rms_norm, capsys, inputs=INPUTS, atol=1)[1]

    def raises(x, w, eps):
        raise NotImplementedError("write me")

    assert "on input 1 of 3, your function raised NotImplementedError: write me" in \
        verdict(raises, rms_norm, capsys, inputs=INPUTS, atol=1)[1]
    assert "expected a function, found an int" in verdict(3, rms_norm, capsys, inputs=INPUTS, atol=1)[1]


def test_a_function_that_writes_to_its_inputs_does_not_change_them(capsys):
    def in_place(x, w, eps):
        x.mul_(0)
        return x

    before = [x.clone() for x, _, _ in INPUTS]
    assert verdict(in_place, rms_norm, capsys, inputs=INPUTS, atol=1e-6)[0] is False
    assert all(torch.equal(b, x) for b, (x, _, _) in zip(before, INPUTS))


def test_a_function_check_needs_inputs():
    with pytest.raises(TypeError, match="pass expected=<the reference function> and inputs="):
        difference(rms_norm, rms_norm)


# ---------------------------------------------------------------------- never reveals the answer
def renderings(x) -> set[str]:
    """The ways an expected value could show up in a message."""
    if isinstance(x, str):
        return {x, repr(x)}
    if isinstance(x, (set, frozenset, tuple, list)):
        return set().union(*(renderings(v) for v in x)) | {str(x)}
    if isinstance(x, torch.Tensor):
        return set().union(*(renderings(v) for v in x.flatten().tolist())) | {str(x)}
    out = {repr(x), str(x)}
    if isinstance(x, float):
        out |= {f"{x:.{d}g}" for d in range(2, 10)} | {f"{x:.{d}f}" for d in range(1, 8)} | {f"{x:.2e}", f"{x:.3e}"}
    return {r for r in out if len(r.lstrip("-0.")) >= 3}  # short renderings would match by chance


SECRETS = [  # (wrong answer, expected): distinctive expected values, wrong in every way the check knows
    (0.5, 0.73519461, dict(atol=1e-6)),
    (-0.73519, 0.73519461, dict(atol=1e-6)),  # close, and of the opposite sign
    (0.735, 0.73519461, dict(atol=1e-6)),  # its rounding
    (12345, 48123, {}),
    (48124, 48123, {}),
    ("Trondheim", "Stavanger", {}),
    ("Stavangr", "Stavanger", {}),
    ({111, 222}, {111, 333, 444}, {}),
    (torch.tensor([1.25, 7.125, 9.5]), torch.tensor([1.25, 7.8359375, 9.5]), dict(atol=1e-4)),
    (torch.tensor([1.25, 7.125]), torch.tensor([1.25, 7.8359375, 9.5]), dict(atol=1e-4)),
    (torch.tensor([101, 202, 303]), torch.tensor([101, 919, 303]), {}),
    ((17, 0.5), (29, 4.28125), dict(atol=1e-4)),
    ({"layer": 3}, {"layer": 2171}, {}),
]


@pytest.mark.parametrize("answer,expected,tol", SECRETS)
def test_the_message_never_holds_the_answer_or_the_distance_to_it(answer, expected, tol, capsys):
    result, out = verdict(answer, expected, capsys, **tol)
    assert result is False
    for yours in sorted(renderings(answer), key=len, reverse=True):  # the student's own value may be echoed
        out = out.replace(yours, "<yours>")
    secret = renderings(expected) - renderings(answer)
    if isinstance(expected, (float, int)) and not isinstance(expected, bool):
        secret |= renderings(float(abs(expected - answer)))  # answer +- distance = the answer
    leaked = [s for s in secret if s in out]
    assert not leaked, f"{out!r} reveals {leaked}"


def test_a_function_check_never_shows_the_reference_output(capsys):
    def reference(x):
        return x * 7.8359375

    def wrong(x):
        return x * 7.125

    _, out = verdict(wrong, reference, capsys, inputs=[torch.tensor([1.0, 2.0])], atol=1e-4)
    assert "7.83" not in out and "15.67" not in out and "not yet" in out


# ----------------------------------------------------------------------- registered exercises
@pytest.fixture
def registry():
    from lfm2_edu import answers  # noqa: F401  (registered once, on import: keep them)

    before = dict(EXERCISES)
    yield
    EXERCISES.clear()
    EXERCISES.update(before)


def test_check_exercise_computes_the_expected_value_from_the_chapter(registry, capsys):
    calls = []

    @exercise("98.1", atol=1e-6)
    def _(config):
        calls.append(1)
        return config.hidden_size / config.num_attention_heads

    config = course.stand_in_model(97).config  # hidden 64, 4 heads
    assert check_exercise("98.1", None, config=config) is None and not calls  # not answered: nothing computed
    assert check_exercise("98.1", 16, config=config) is True
    assert check_exercise("98.1", 15.5, config=config) is False
    out = capsys.readouterr().out
    assert out.splitlines() == ["Exercise 98.1: not answered yet", "Exercise 98.1: right",
                                "Exercise 98.1: not yet: 15.5 is not within the tolerance 1e-06 of the answer"]


def test_an_expected_value_can_carry_its_measured_tolerance(registry, capsys):
    tol = course.Tolerance(torch.bfloat16, 0.05, "measured")

    @exercise("98.2")
    def _():
        return Expected(torch.tensor([1.0, 2.0]), atol=tol)

    assert check_exercise("98.2", torch.tensor([1.04, 1.97])) is True
    assert check_exercise("98.2", torch.tensor([1.06, 2.0])) is False


def test_functions_to_write_are_tried_on_registered_inputs(registry, capsys):
    exercise("98.3", atol=1e-6, inputs=lambda: INPUTS)(lambda: rms_norm)
    assert check_exercise("98.3", rms_norm) is True
    assert check_exercise("98.3", lambda x, w, eps: x) is False


def test_bad_registrations_and_keys_are_refused(registry):
    with pytest.raises(ValueError, match=r"exercise key: expected 'NN.i' \(chapter, exercise\), found 'ex1'"):
        exercise("ex1")
    exercise("98.4")(lambda: 1)
    with pytest.raises(ValueError, match="exercise 98.4: expected one expected-value function, found a second"):
        exercise("98.4")(lambda: 2)
    with pytest.raises(KeyError, match="found '98.9'"):
        check_exercise("98.9", 1)


# ------------------------------------------------------- the chapters' exercises, in lfm2_edu.answers
@pytest.fixture(scope="module")
def shipped():
    return course.load(course.SHIPPED_MODEL, torch.float32)


@torch.no_grad()
def test_chapter_09_answers(shipped, capsys):
    model, tokenizer = shipped
    config, k = model.config, model.config.num_experts_per_tok
    ids = tokenizer.encode('def add(a, b):\n    return a + b\n{"id": 3}')
    table = routing.route_tokens(model, tokenizer, ids)
    layer = table.layers[len(table.layers) // 2]
    margin = routing.selection_margin(table.layer(layer)["selection_scores"], k)  # the chapter's solutions:
    solution_1 = int(margin.argmin())
    v = table.layer(table.layers[0])
    solution_2 = v["scores"][-1][v["selected"][-1]]
    solution_2 = solution_2 / (solution_2.sum() + 1e-6) * config.routed_scaling_factor
    v = table.layer(table.layers[-1])
    solution_3 = sum(int(v["scores"][n].argmax()) != int(v["selected"][n, 0]) for n in range(len(ids)))
    assert check_exercise("09.1", solution_1, table=table, layer=layer, k=k)
    assert check_exercise("09.2", solution_2, table=table, config=config)
    assert check_exercise("09.3", solution_3, table=table)
    assert not check_exercise("09.1", (solution_1 + 1) % len(ids), table=table, layer=layer, k=k)
    assert not check_exercise("09.2", v["scores"][-1][v["selected"][-1]], table=table, config=config)  # not renormalised
    assert not check_exercise("09.3", solution_3 + 1, table=table)


def test_chapter_10_answers(capsys):
    b, load = torch.tensor([0.0, 0.1, -0.1, 0.0, 0.05, 0.0]), torch.tensor([30.0, 10, 20, 20, 0, 40])
    assert check_exercise("10.1", b + 0.005 * torch.sign(load.mean() - load))
    assert not check_exercise("10.1", b + 0.005 * torch.sign(load - load.mean()))  # the sign the wrong way round
    live = course.stand_in_model(97).config  # 8 experts, top-2, like the chapter's live run
    assert check_exercise("10.2", live.num_experts / live.num_experts_per_tok - 1, config=live)
    assert not check_exercise("10.2", live.num_experts / live.num_experts_per_tok, config=live)
    balance = {"max_violation": {1: [3.0, 2.5, 2.0], 2: [1.0, 2.9, 2.8], 3: [3.0, 1.0, 0.5]}}
    assert check_exercise("10.3", 2, balance=balance)
    assert not check_exercise("10.3", 1, balance=balance)


def test_chapter_11_answers(capsys):
    E, k, layer = 8, 2, 3
    g = torch.Generator().manual_seed(0)
    tables = {d: torch.rand(4, 25, E, generator=g).topk(k, dim=-1).indices for d in ("arithmetic", "prose")}  # (N, T, k)
    spec = {layer: routing.domain_specialisation(tables, E)}
    share = spec[layer]["arithmetic"]
    context = dict(spec=spec, layer=layer, domain="arithmetic", num_experts=E, k=k)
    assert check_exercise("11.1", (int(share.argmin()), float(share.min()) * E / k), **context)
    assert not check_exercise("11.1", (int(share.argmax()), float(share.max()) * E / k), **context)  # the most visited
    selected = {d: {layer: t} for d, t in tables.items()}
    assert check_exercise("11.2", lambda sel: float((sel[:, 1:, 0] == sel[:, :-1, 0]).float().mean()),
                          selected=selected, layer=layer)
    assert not check_exercise("11.2", lambda sel: float((sel[..., 0].reshape(-1)[1:] == sel[..., 0].reshape(-1)[:-1])
                                                        .float().mean()), selected=selected, layer=layer)  # across windows
    big = LFM2Config()
    assert check_exercise("11.3", 1 - math.comb(28, 4) / math.comb(32, 4), config=big)
    assert not check_exercise("11.3", 4 / 32, config=big)  # one given expert, not "any"
    halves = {"a": tables["arithmetic"][:2], "b": tables["arithmetic"][2:]}
    assert check_exercise("11.4", routing.domain_information(halves, E), selected=selected, layer=layer,
                          domain="arithmetic", num_experts=E)
    assert not check_exercise("11.4", routing.domain_information(tables, E) + 0.5, selected=selected, layer=layer,
                              domain="arithmetic", num_experts=E)


def test_every_registered_exercise_belongs_to_a_chapter():
    from pathlib import Path

    from lfm2_edu import answers  # noqa: F401  (registers them)

    chapters = {p.name[:2] for p in (Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert {key.split(".")[0] for key in EXERCISES if not key.startswith("98")} <= chapters
