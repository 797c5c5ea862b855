"""scripts/course_table.py on synthetic notebooks whose timestamps, words, exercises and explorers are known."""

import json
import sys
from pathlib import Path

import pytest

from lfm2_edu.course import chapter_header

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import course_table  # noqa: E402


def code(source: str, start: str | None = None, end: str | None = None) -> dict:
    meta = {"execution": {"iopub.execute_input": start, "shell.execute_reply": end}} if start else {}
    return {"cell_type": "code", "metadata": meta, "source": source.splitlines(True), "outputs": []}


def markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text.splitlines(True)}


def write(folder: Path, name: str, cells: list[dict]) -> Path:
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


HEADER = chapter_header(6, "The MoE layer", ["route a token"], ["chapter 05"], 40, "`route(h)`")


def chapter(folder: Path) -> Path:
    return write(folder, "06_mixture_of_experts", [
        markdown(HEADER),
        code("%matplotlib inline\nimport lfm2_edu", "2026-01-01T10:00:00.000000Z", "2026-01-01T10:00:01.500000Z"),
        markdown("Five words of prose here.\n\n```python\nnot = counted + as_prose\n```\nTwo more."),
        code("check_exercise('06.1', answer_1, table=t)\ncheck_exercise('06.1', answer_1)  # the same exercise",
             "2026-01-01T10:00:02Z", "2026-01-01T10:00:04.250000Z"),
        code("viz.router_explorer(model, tok)\nbalancing_toy()\nplot_balancing_toy(x)  # a figure, not a widget\n"
             "check_exercise(key, a)\nexpert_browser(m)", "2026-01-01T10:00:05Z", "2026-01-01T10:01:05Z"),
        code("# never executed, so not timed\nrouter_explorer(model, tok)"),
        code("   \n"),  # an empty cell is not a code cell to time
    ])


def test_a_chapter_is_read_as_written(tmp_path):
    c = course_table.read_chapter(chapter(tmp_path))
    assert (c.name, c.title, c.minutes) == ("06_mixture_of_experts", "The MoE layer", 40)
    assert c.seconds == pytest.approx(1.5 + 2.25 + 60) and (c.timed, c.code_cells) == (3, 4)
    header_words = len(HEADER.split())
    assert c.words == header_words + 5 + 2
    assert c.exercises == 2  # '06.1' once, and one call whose key is computed
    assert c.explorers == ["router_explorer", "balancing_toy", "expert_browser"]
    row = course_table.table([c]).splitlines()[2]
    assert row == ("| 06 | The MoE layer | 40 | 63.8 (3 of 4 cells) | "
                   f"{header_words + 7} | 2 | `router_explorer`, `balancing_toy`, `expert_browser` |")


def test_a_chapter_without_header_or_timestamps(tmp_path):
    path = write(tmp_path, "07_the_whole_model", [markdown("# 07 · The whole model\n\nNo header."),
                                                   code("print(1)")])
    c = course_table.read_chapter(path)
    assert (c.title, c.minutes, c.seconds, c.exercises, c.explorers) == ("The whole model", None, None, 0, [])
    words = 8  # "#", "07", "·", three title words, two more
    row = course_table.table([c]).splitlines()[2]
    assert row == f"| 07 | The whole model | no header yet | not timed | {words} | 0 | none |"


def test_write_puts_the_table_between_the_markers_only(tmp_path):
    chapter(tmp_path)
    course = tmp_path / "COURSE.md"
    course.write_text(f"# Course\n\nbefore\n{course_table.BEGIN}\nold table\n{course_table.END}\nafter\n")
    assert course_table.main(["--write", "--notebooks", str(tmp_path), "--course", str(course)]) == 0
    text = course.read_text()
    assert text.startswith("# Course\n\nbefore\n") and text.endswith(f"{course_table.END}\nafter\n")
    assert "old table" not in text and "| 06 | The MoE layer | 40 |" in text
    course_table.main(["--write", "--notebooks", str(tmp_path), "--course", str(course)])
    assert course.read_text() == text  # a second run changes nothing


def test_missing_markers_leave_the_file_alone(tmp_path):
    chapter(tmp_path)
    course = tmp_path / "COURSE.md"
    course.write_text("# Course without markers\n")
    with pytest.raises(ValueError, match="expected the markers"):
        course_table.main(["--write", "--notebooks", str(tmp_path), "--course", str(course)])
    assert course.read_text() == "# Course without markers\n"


def test_bad_input_is_named(tmp_path, capsys):
    (tmp_path / "03_broken.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="03_broken.ipynb: expected a notebook"):
        course_table.read_chapter(tmp_path / "03_broken.ipynb")
    odd = code("def (:\n", "2026-01-01T10:00:00Z", "2026-01-01T10:00:01Z")
    path = write(tmp_path, "04_odd", [markdown("# 04 · Odd"), odd])
    assert course_table.read_chapter(path).seconds == 1.0  # timed all the same
    assert "04_odd.ipynb, cell 1: a code cell: expected Python" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        course_table.main(["--notebooks", str(tmp_path / "empty")])
