"""Colab and Binder: one repository address makes every link and the chapters' first cell; the
first cell installs lfm2_edu only where it is missing; Binder gets the CPU build of torch."""

import builtins
import re
import stat
from pathlib import Path

import torch

from lfm2_edu import hosting

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_links_are_made_from_the_one_repository_address():
    url = hosting.colab_url("04_short_convolution")
    assert url == (f"https://colab.research.google.com/github/{hosting.REPOSITORY}/blob/{hosting.BRANCH}"
                   f"/notebooks/04_short_convolution.ipynb")
    assert hosting.binder_url("04_short_convolution").endswith("?urlpath=lab/tree/notebooks/04_short_convolution.ipynb")
    assert hosting.REPOSITORY in hosting.INSTALL_CELL and hosting.colab_badge("00_welcome").count("](https://") == 2


def test_the_readme_links_every_chapter_to_colab():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in CHAPTERS:
        assert hosting.colab_url(path.stem) in readme, f"README: no Colab link for {path.name}"
    linked = re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+", readme)
    assert set(linked) == {hosting.colab_url(p.stem) for p in CHAPTERS}, "a Colab link not made from hosting.REPOSITORY"
    assert hosting.binder_url() in readme


def run_first_cell(importable: bool) -> list[tuple[str, str]]:
    """Run INSTALL_CELL as IPython would, with a stand-in shell that records its magics."""
    from IPython.core.inputtransformer2 import TransformerManager

    calls = []
    state = {"installed": importable}
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "lfm2_edu" and not state["installed"]:
            raise ImportError("No module named 'lfm2_edu'")
        return real_import(name, *args, **kwargs)

    class Shell:
        def run_line_magic(self, magic, line):
            calls.append((magic, line))
            state["installed"] = True  # what %pip install does

    code = TransformerManager().transform_cell(hosting.INSTALL_CELL)
    builtins.__import__ = fake_import
    try:
        exec(compile(code, "<first cell>", "exec"), {"get_ipython": Shell})
    finally:
        builtins.__import__ = real_import
    return calls


def test_the_first_cell_does_nothing_where_lfm2_edu_is_installed():
    assert run_first_cell(importable=True) == []


def test_the_first_cell_installs_lfm2_edu_where_it_is_missing():
    calls = run_first_cell(importable=False)
    assert calls == [("pip", f'install --quiet "{hosting.INSTALL_SPEC}"')]
    assert hosting.INSTALL_SPEC == f"lfm2_edu @ git+https://github.com/{hosting.REPOSITORY}@{hosting.BRANCH}"


def test_binder_gets_the_cpu_build_of_torch_and_the_package():
    requirements = (REPO / "binder" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    pins = [line for line in requirements if line.startswith("torch==")]
    assert len(pins) == 1 and pins[0].endswith("+cpu")
    assert pins[0].split("==")[1].split("+")[0] == torch.__version__.split("+")[0], "pin the torch the tests ran on"
    post = REPO / "binder" / "postBuild"
    assert post.stat().st_mode & stat.S_IXUSR and "pip install" in post.read_text() and " -e ." in post.read_text()
    assert re.fullmatch(r"python-3\.\d+\s*", (REPO / "binder" / "runtime.txt").read_text())
