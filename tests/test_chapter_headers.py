"""Every chapter opens with the same header: objectives, prerequisites, minutes, what you build.

The header is the chapter's first cell, Markdown in the form `lfm2_edu.course.chapter_header`
writes (render it with that function and paste it). Chapters not converted yet are expected to
fail; whoever converts a chapter removes it from NOT_YET_CONVERTED (strict: a converted chapter
still listed fails too).
"""

import json
import re
from pathlib import Path

import pytest

from course_status import NOT_YET_CONVERTED
from lfm2_edu.course import parse_chapter_header

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PENDING = pytest.mark.xfail(strict=True, reason="chapters not yet converted")


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[PENDING] if p.stem in NOT_YET_CONVERTED else [])
                                  for p in NOTEBOOKS])
def test_the_chapter_opens_with_its_header(path):
    first = json.loads(path.read_text(encoding="utf-8"))["cells"][0]
    assert first["cell_type"] == "markdown", f"{path.name}: the first cell must be the Markdown header"
    header = parse_chapter_header("".join(first["source"]))  # raises, naming what is missing
    assert header.number == int(path.name[:2]), f"{path.name}: its header says chapter {header.number:02d}"
    earlier = {int(p.name[:2]) for p in NOTEBOOKS if int(p.name[:2]) < header.number}
    for item in header.prerequisites:
        for n in map(int, re.findall(r"\bchapters? (\d\d)\b", item)):
            assert n in earlier, f"{path.name}: prerequisite '{item}' names chapter {n:02d}, not an earlier chapter"


def test_every_listed_chapter_exists():
    assert NOT_YET_CONVERTED <= {p.stem for p in NOTEBOOKS}, "a chapter in NOT_YET_CONVERTED was renamed or removed"


def write_chapter(folder: Path, name: str, prerequisites: list[str]) -> Path:
    from lfm2_edu.course import chapter_header

    text = chapter_header(int(name[:2]), "The short convolution", ["build the block inline"], prerequisites, 30,
                          "`short_conv(h, block)`")
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": text.splitlines(True)}]}))
    return path


def test_a_converted_chapter_passes_and_a_later_prerequisite_does_not(tmp_path):
    test_the_chapter_opens_with_its_header(write_chapter(tmp_path, "04_short_convolution", ["chapter 03", "PyTorch"]))
    with pytest.raises(AssertionError, match="names chapter 05, not an earlier chapter"):
        test_the_chapter_opens_with_its_header(write_chapter(tmp_path, "04_short_convolution", ["chapter 05"]))
    with pytest.raises(AssertionError, match="its header says chapter 04"):
        test_the_chapter_opens_with_its_header(write_chapter(tmp_path, "04_short_convolution", []).rename(
            tmp_path / "06_mixture_of_experts.ipynb"))
