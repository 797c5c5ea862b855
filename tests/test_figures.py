"""The figures folder, its index and the chapters agree: the index is read from the chapters'
save_figure calls (lfm2_edu.figures), every figure in figures/ is indexed, every indexed figure
is there as PNG and SVG, and figures/INDEX.md is the one the chapters give."""

import json
import re

import pytest

from lfm2_edu import course, figures

FOLDER = course.REPO_FIGURES
FOUND = figures.all_figures()


def test_the_chapters_save_figures_with_names_of_their_own():
    assert FOUND, "no chapter saves a figure"
    names = [f.name for f in FOUND]
    assert len(names) == len(set(names)), f"a figure name saved twice: {sorted(n for n in names if names.count(n) > 1)}"
    for f in FOUND:
        assert figures.NAME.fullmatch(f.name), f"{f.chapter} saves {f.name!r}: expected NN_lowercase_words"
        assert f.name[:2] == f.chapter[:2], f"{f.chapter} saves {f.name!r}: a name starts with its chapter's number"


def test_every_figure_file_has_an_index_row():
    on_disk = {p.stem for ext in figures.FORMATS for p in FOLDER.glob(f"*.{ext}")}  # the shipped model's figures
    unindexed = sorted(on_disk - {f.name for f in FOUND})
    assert not unindexed, f"figures no chapter saves (stale files? delete them): {unindexed}"


@pytest.mark.parametrize("figure", FOUND, ids=lambda f: f.name)
def test_every_index_row_has_its_png_and_svg(figure):
    missing = [f"{figure.name}.{ext}" for ext in figures.FORMATS if not (FOLDER / f"{figure.name}.{ext}").is_file()]
    assert not missing, f"indexed but not in figures/: {missing} (python -m lfm2_edu.figures build {figure.name[:2]})"
    assert (FOLDER / f"{figure.name}.png").read_bytes().startswith(b"\x89PNG")
    svg = (FOLDER / f"{figure.name}.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


@pytest.mark.parametrize("figure", FOUND, ids=lambda f: f.name)
def test_every_row_names_its_drawing_function_and_a_caption(figure):
    function = figure.function()  # the chapter's import, resolved: it exists
    assert callable(function) and figure.drawn_by.startswith("lfm2_edu.viz.")
    assert figure.caption and "\n" not in figure.caption and "|" not in figure.caption


def test_the_written_index_is_the_chapters():
    written = (FOLDER / "INDEX.md").read_text(encoding="utf-8")
    assert written == figures.index_markdown(), "figures/INDEX.md is stale: python -m lfm2_edu.figures index"
    stale = sorted(set(figures.CAPTIONS) - {f.name for f in FOUND})
    assert not stale, f"captions of figures no chapter saves: {stale}"


def test_the_index_follows_what_a_chapter_saves(tmp_path, monkeypatch):
    """Read from the cells, not kept by hand: a chapter that saves a new figure gets its row, with
    the function resolved through that chapter's import and the docstring's first sentence."""
    cell = lambda source: {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], "execution_count": None}
    nb = {"cells": [cell("%matplotlib inline\nfrom lfm2_edu.viz import routing as viz\nfrom lfm2_edu import course"),
                    {"cell_type": "markdown", "source": "save_figure(fig, '13_not_code')", "metadata": {}},
                    cell("view, fig = viz.plot_balancing_toy(sim)\ncourse.save_figure(fig, '13_toy');")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "13_new.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(figures, "NOTEBOOKS", tmp_path)
    (found,) = figures.all_figures()
    assert (found.name, found.chapter, found.drawn_by) == ("13_toy", "13_new", "lfm2_edu.viz.routing.plot_balancing_toy")
    assert found.caption and found.caption == figures.first_sentence(found.function())
    assert "| [13_toy](13_toy.png) ([svg](13_toy.svg)) | [13_new](../notebooks/13_new.ipynb) |" in figures.index_markdown()
    nb["cells"][2] = cell("course.save_figure(fig, f'13_{name}')")
    (tmp_path / "13_new.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="save_figure needs a literal name"):
        figures.all_figures()


def test_the_readme_shows_only_indexed_figures():
    readme = (FOLDER.parent / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"\]\(figures/([^)]+)\.(?:png|svg)\)", readme)
    assert shown and set(shown) <= {f.name for f in FOUND}, shown
