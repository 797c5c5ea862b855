"""The chapters on Colab and Binder, where `make lab` does not apply.

REPOSITORY is the one place the course's public address is written: the Colab and Binder links
and the chapters' first cell are all made from it.

    colab_url("04_short_convolution")     # open a chapter in Colab, straight from GitHub
    binder_url("04_short_convolution")    # the same chapter in JupyterLab on Binder
    print(INSTALL_CELL)                   # the first code cell of every chapter

Colab opens one notebook without its repository: the first cell installs lfm2_edu from GitHub
when it is not importable. In `make lab` and on Binder the package is installed, and the cell
does nothing.
"""

from __future__ import annotations

REPOSITORY = "OWNER/lfm2_edu"  # GitHub owner/name of the course; set it once it is published
BRANCH = "main"
INSTALL_SPEC = f"lfm2_edu @ git+https://github.com/{REPOSITORY}@{BRANCH}"

INSTALL_CELL = f'''\
# Colab: install lfm2_edu when it is missing (in `make lab` and on Binder it is there: nothing happens).
try:
    import lfm2_edu
except ImportError:
    %pip install --quiet "{INSTALL_SPEC}"
    import importlib
    importlib.invalidate_caches()
    import lfm2_edu'''


def colab_url(chapter: str) -> str:
    """chapter: a notebook's stem, such as "04_short_convolution"."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{chapter}.ipynb"


def binder_url(chapter: str | None = None) -> str:
    """JupyterLab on Binder, at one chapter or at the chapters' folder."""
    path = f"notebooks/{chapter}.ipynb" if chapter else "notebooks"
    return f"https://mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}?urlpath=lab/tree/{path}"


def colab_badge(chapter: str) -> str:
    """The Markdown link a chapter's first cell shows."""
    return f"[Open in Colab]({colab_url(chapter)}) · [Open on Binder]({binder_url(chapter)})"


__all__ = ["BRANCH", "INSTALL_CELL", "INSTALL_SPEC", "REPOSITORY", "binder_url", "colab_badge", "colab_url"]
