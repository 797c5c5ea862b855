"""The write-it-yourself track: your own versions of lfm2_edu's blocks, graded by its tests.

Each file here is one block as a stub, with the package's interface (the same constructor,
methods and parameter names, so the real model can run with it and a checkpoint's weights load
into it) and a body that raises NotImplementedYet until you write it. `python -m student.grade`
swaps each block into the real model and runs the package's parity and cache tests on it.
See README.md in this folder.
"""


class NotImplementedYet(NotImplementedError):
    """Raised by a stub that is still waiting for its code."""


def todo(what: str, file: str, chapter: str):
    """The body of a stub: says what to write, where, and which chapter explains it."""
    raise NotImplementedYet(f"write {what} in student/{file} (chapter {chapter})")
