"""The chapters on Colab and Binder, where `make lab` does not apply.

REPOSITORY is the one place the course's public address is written: the Colab and Binder links
and the chapters' first cell are all made from it.

    colab_url("04_short_convolution")     # open a chapter in Colab, straight from GitHub
    binder_url("04_short_convolution")    # the same chapter in JupyterLab on Binder
    print(INSTALL_CELL)                   # the first code cell of every chapter

Colab opens one notebook without its repository: the first cell installs lfm2_edu from GitHub
when it is not importable. In `make lab` and on Binder the package is installed, and the cell
does nothing. Every chapter's first code cell is INSTALL_CELL, as written here:

    python -m lfm2_edu.hosting check          # the chapters whose first code cell is not INSTALL_CELL
    python -m lfm2_edu.hosting insert         # put it there (before the chapter's first code cell)

A fork publishes under its own address: `python -m lfm2_edu.hosting set OWNER/NAME` (without an
argument: the GitHub address of the git remote "origin") rewrites REPOSITORY below, the README's
links and the chapters' first cells, together.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = "OWNER/lfm2_edu"  # GitHub owner/name of the course (a placeholder until it is published)
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


# ------------------------------------------------------------- the chapters and the address
REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
ADDRESS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")  # GitHub's owner/name
GITHUB_REMOTE = re.compile(r"github\.com[:/]([^/\s]+/[^/\s]+?)(?:\.git)?/?$")


def chapters(folder: Path | None = None) -> list[Path]:
    return sorted((folder or NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))


def first_code_cell(notebook: Path) -> str | None:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return next(("".join(c["source"]) for c in cells if c["cell_type"] == "code"), None)


def chapters_without_install_cell(folder: Path | None = None) -> list[str]:
    """The chapters (stems) whose first code cell is not INSTALL_CELL."""
    return [p.stem for p in chapters(folder) if (first_code_cell(p) or "").strip() != INSTALL_CELL.strip()]


def insert_install_cell(notebook: Path) -> bool:
    """Make INSTALL_CELL the chapter's first code cell (after its Markdown header); False if it is."""
    import nbformat

    if (first_code_cell(notebook) or "").strip() == INSTALL_CELL.strip():
        return False
    nb = nbformat.read(notebook, as_version=4)
    at = next((n for n, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(at, nbformat.v4.new_code_cell(INSTALL_CELL))
    nbformat.write(nb, notebook)
    return True


def repository_from_git(remote: str = "origin", cwd: Path = REPO) -> str | None:
    """owner/name of the GitHub repository the git remote points at, or None (no git, no such
    remote, not GitHub)."""
    try:
        url = subprocess.run(["git", "remote", "get-url", remote], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    match = GITHUB_REMOTE.search(url)
    return match.group(1) if match else None


def set_repository(repository: str, repo: Path = REPO) -> list[Path]:
    """Publish under another address: rewrite REPOSITORY in this file, the Colab and Binder links
    of the README and the chapters' first cells. Returns the files changed."""
    if not ADDRESS.fullmatch(repository):
        raise ValueError(f"set_repository: expected a GitHub address owner/name, found {repository!r}")
    old, old_cell = REPOSITORY, INSTALL_CELL
    new_cell = old_cell.replace(f"github.com/{old}@", f"github.com/{repository}@")
    edits = {repo / "lfm2_edu" / "hosting.py": [(f'REPOSITORY = "{old}"', f'REPOSITORY = "{repository}"')],
             repo / "README.md": [(f"colab.research.google.com/github/{old}/", f"colab.research.google.com/github/{repository}/"),
                                  (f"mybinder.org/v2/gh/{old}/", f"mybinder.org/v2/gh/{repository}/")]}
    for path in chapters(repo / "notebooks"):
        edits[path] = [(json.dumps(line)[1:-1], json.dumps(new)[1:-1])  # as the cell's lines are stored in JSON
                       for line, new in zip(old_cell.splitlines(True), new_cell.splitlines(True)) if line != new]
    changed = []
    for path, pairs in edits.items():
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new_text = text
        for a, b in pairs:
            new_text = new_text.replace(a, b)
        if new_text != text:
            path.write_text(new_text, encoding="utf-8")
            changed.append(path)
    return changed  # this process keeps the old REPOSITORY: a new one reads the new file


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lfm2_edu.hosting", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="list the chapters whose first code cell is not INSTALL_CELL (exit 1 if any)")
    sub.add_parser("insert", help="make INSTALL_CELL every chapter's first code cell")
    publish = sub.add_parser("set", help="publish under another address: REPOSITORY, the README, the first cells")
    publish.add_argument("repository", nargs="?", help="owner/name (default: from the git remote 'origin')")
    args = parser.parse_args(argv)
    if args.command == "check":
        missing = chapters_without_install_cell()
        print("\n".join(f"{name}: its first code cell is not hosting.INSTALL_CELL" for name in missing)
              or f"every chapter's first code cell is hosting.INSTALL_CELL ({len(chapters())} chapters)")
        return 1 if missing else 0
    if args.command == "insert":
        for path in chapters():
            print(f"{path.name}: {'inserted' if insert_install_cell(path) else 'already there'}")
        return 0
    repository = args.repository or repository_from_git()
    if repository is None:
        parser.error("no address given and the git remote 'origin' is not a GitHub repository: give owner/name")
    for path in set_repository(repository):
        print(f"rewrote {path.relative_to(REPO)}")
    print(f"REPOSITORY = {repository!r}")
    return 0


__all__ = ["BRANCH", "INSTALL_CELL", "INSTALL_SPEC", "REPOSITORY", "binder_url", "chapters_without_install_cell",
           "colab_badge", "colab_url", "insert_install_cell", "repository_from_git", "set_repository"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

