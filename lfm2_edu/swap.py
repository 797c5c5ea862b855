"""Swapping one of the package's blocks for another implementation of the same interface.

The write-it-yourself track (the `student` package) has its own RMSNorm, ShortConv, apply_min_p
and so on; `swapped` puts them into the real model, so the package's own tests grade them:

    with swapped(RMSNorm=student.norm.RMSNorm):
        model = load_model("tiny-lfm2-moe")   # every RMSNorm in this model is the student's
        model(ids)                            # and so is every norm a forward pass calls

Inside the block, every lfm2_edu module that refers to the package's block refers to the
replacement instead; on leaving it, the package's own are put back. Classes matter when a model
is built, functions (apply_rope, apply_min_p, update_expert_bias) when they are called: keep the
calls inside the block too. The replacement must keep the interface: the same constructor and
method signatures (checked here) and the same parameter and buffer names (checked when a
checkpoint's weights load into it).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# The blocks that can be swapped: name -> the module that defines the package's implementation.
SWAPPABLE = {
    "RMSNorm": "lfm2_edu.norm",
    "RotaryEmbedding": "lfm2_edu.rope",
    "apply_rope": "lfm2_edu.rope",
    "ShortConv": "lfm2_edu.conv",
    "GroupedQueryAttention": "lfm2_edu.attention",
    "SparseMoE": "lfm2_edu.moe",
    "apply_min_p": "lfm2_edu.generate",
    "update_expert_bias": "lfm2_edu.train",
}
# Every module that uses one of them, imported first so that none is missed.
USERS = ["lfm2_edu.layer", "lfm2_edu.model", "lfm2_edu.attention", "lfm2_edu.generate", "lfm2_edu.train"]


class SwapError(TypeError):
    """A replacement that does not have the interface of the block it replaces."""


def package_block(name: str):
    """The package's own implementation of block `name` (a class or a function)."""
    if name not in SWAPPABLE:
        raise SwapError(f"swapped: expected a block name among {', '.join(SWAPPABLE)}, found {name!r}")
    return getattr(importlib.import_module(SWAPPABLE[name]), name)


def _parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def check_interface(name: str, replacement) -> None:
    """Raise SwapError unless `replacement` can stand in for the package's block `name`."""
    original = package_block(name)
    where = f"{SWAPPABLE[name]}.{name}"
    found = getattr(replacement, "__qualname__", type(replacement).__name__)
    if inspect.isclass(original):
        if not inspect.isclass(replacement):
            raise SwapError(f"{name}: expected a class like {where}, found {found} ({type(replacement).__name__})")
        methods = [m for m, v in vars(original).items() if callable(v) and (m == "__init__" or not m.startswith("_"))]
        pairs = [(f"{name}.{m}", getattr(original, m), getattr(replacement, m, None)) for m in methods]
    else:
        if inspect.isclass(replacement) or not callable(replacement):
            raise SwapError(f"{name}: expected a function like {where}, found {found} ({type(replacement).__name__})")
        pairs = [(name, original, replacement)]
    for label, theirs, ours in pairs:
        if ours is None:
            raise SwapError(f"{label}: expected a method with the parameters ({', '.join(_parameters(theirs))}) "
                            f"as in {SWAPPABLE[name]}, found no such method")
        if _parameters(ours) != _parameters(theirs):
            raise SwapError(f"{label}: expected the parameters ({', '.join(_parameters(theirs))}) as in "
                            f"{SWAPPABLE[name]}, found ({', '.join(_parameters(ours))})")


@contextmanager
def swapped(**replacements) -> Iterator[None]:
    """Within the block, lfm2_edu uses the given replacements for its blocks (by name, see SWAPPABLE)."""
    originals = {}
    for name, replacement in replacements.items():
        check_interface(name, replacement)
        originals[name] = package_block(name)
    for module in USERS:
        importlib.import_module(module)
    patched = []  # (module, attribute, the package's object): what to put back
    for module in list(sys.modules.values()):
        if module is None or not (module.__name__ == "lfm2_edu" or module.__name__.startswith("lfm2_edu.")):
            continue
        for attribute, value in list(vars(module).items()):
            for name, original in originals.items():
                if value is original:
                    setattr(module, attribute, replacements[name])
                    patched.append((module, attribute, original))
    try:
        yield
    finally:
        for module, attribute, original in reversed(patched):
            setattr(module, attribute, original)
