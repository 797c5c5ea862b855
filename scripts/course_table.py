"""The course table: one row per chapter, read from the committed notebooks.

For every notebooks/NN_*.ipynb it prints a Markdown row with:
- the title, and the minutes of its header (the first cell, `lfm2_edu.course.parse_chapter_header`;
  "no header yet" where it does not parse): the chapter author's estimate of the working time;
- the execution time of its code cells, summed from the timestamps nbclient writes into each cell's
  metadata.execution when a notebook is executed (shell.execute_reply - iopub.execute_input): the
  time of the machine that last executed the committed notebook, not a reader's time;
- the words of its prose (Markdown cells, fenced code left out);
- its exercises (distinct keys of its check_exercise calls) and its explorers (the widget-making
  calls: *_explorer, balancing_toy, expert_browser).

    python scripts/course_table.py            # print the table
    python scripts/course_table.py --write    # and put it between the markers in COURSE.md
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from lfm2_edu.course import parse_chapter_header  # noqa: E402

BEGIN = "<!-- course table: begin (scripts/course_table.py --write) -->"
END = "<!-- course table: end -->"
EXPLORER = re.compile(r"\w+_explorer|balancing_toy|expert_browser")  # what the chapters call to make a widget


@dataclass
class Chapter:
    name: str  # the notebook's stem, e.g. "04_short_convolution"
    title: str
    minutes: int | None  # the header's estimate; None without a parsable header
    seconds: float | None  # summed execution time; None if no code cell carries timestamps
    timed: int  # code cells with timestamps
    code_cells: int  # code cells with any source
    words: int
    exercises: int
    explorers: list[str]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def cell_seconds(cell: dict) -> float | None:
    """shell.execute_reply - iopub.execute_input of one executed code cell; None if not recorded."""
    ex = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in ex or "shell.execute_reply" not in ex:
        return None
    return (_when(ex["shell.execute_reply"]) - _when(ex["iopub.execute_input"])).total_seconds()


def prose_words(markdown: str) -> int:
    """Whitespace-separated words of Markdown, fenced code blocks left out."""
    return len(re.sub(r"```.*?```", " ", markdown, flags=re.S).split())


def calls(code: str) -> list[tuple[str, ast.Call]]:
    """(name, node) of every call in a code cell; IPython magics and shell lines are skipped."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"a code cell: expected Python, found a syntax error at line {e.lineno}: {e.msg}") from None
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name:
                out.append((name, node))
    return out


def read_chapter(path: Path) -> Chapter:
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path.name}: expected a notebook (JSON with a 'cells' list), found {e}") from None
    first = _source(cells[0]) if cells and cells[0].get("cell_type") == "markdown" else ""
    try:
        header = parse_chapter_header(first)
        title, minutes = header.title, header.minutes
    except ValueError:  # not converted yet: the title is the first heading, the minutes unknown
        heading = re.search(r"^#+\s*(?:\d\d\s*·\s*)?(.+)$", first, flags=re.M)
        title, minutes = (heading[1].strip() if heading else path.stem), None
    code = [(n, c) for n, c in enumerate(cells) if c.get("cell_type") == "code" and _source(c).strip()]
    times = [t for t in (cell_seconds(c) for _, c in code) if t is not None]
    keys, unnamed, explorers = set(), 0, []
    for n, cell in code:
        try:
            found = calls(_source(cell))
        except ValueError as e:  # counted as no calls, and said: the rest of the table still stands
            print(f"warning: {path.name}, cell {n}: {e}; its calls are not counted", file=sys.stderr)
            continue
        for name, node in found:
            if name == "check_exercise":
                key = node.args[0] if node.args else None
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    keys.add(key.value)
                else:
                    unnamed += 1  # a key computed at run time: counted once per call
            elif EXPLORER.fullmatch(name) and name not in explorers:
                explorers.append(name)
    words = sum(prose_words(_source(c)) for c in cells if c.get("cell_type") == "markdown")
    return Chapter(path.stem, title, minutes, sum(times) if times else None, len(times), len(code), words,
                   len(keys) + unnamed, explorers)


def table(chapters: list[Chapter]) -> str:
    rows = ["| chapter | title | header minutes | execution (s) | prose words | exercises | explorers |",
            "|---|---|---:|---:|---:|---:|---|"]
    for c in chapters:
        minutes = "no header yet" if c.minutes is None else str(c.minutes)
        if c.seconds is None:
            seconds = "not timed"
        else:
            seconds = f"{c.seconds:.1f}" + ("" if c.timed == c.code_cells else f" ({c.timed} of {c.code_cells} cells)")
        explorers = ", ".join(f"`{e}`" for e in c.explorers) or "none"
        rows.append(f"| {c.name[:2]} | {c.title} | {minutes} | {seconds} | {c.words} | {c.exercises} | {explorers} |")
    return "\n".join(rows)


def write_between_markers(path: Path, text: str) -> None:
    doc = path.read_text(encoding="utf-8")
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        raise ValueError(f"{path.name}: expected the markers {BEGIN!r} then {END!r}, once each; "
                         f"found {doc.count(BEGIN)} and {doc.count(END)}")
    head, rest = doc.split(BEGIN)
    tmp = path.with_name(path.name + ".tmp")  # written whole, then moved over: never half a file
    tmp.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="also put the table between the markers in COURSE.md")
    p.add_argument("--notebooks", type=Path, default=REPO / "notebooks")
    p.add_argument("--course", type=Path, default=REPO / "COURSE.md")
    args = p.parse_args(argv)
    paths = sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        p.error(f"expected notebooks named NN_*.ipynb in {args.notebooks}, found none")
    text = table([read_chapter(path) for path in paths])
    print(text)
    if args.write:
        write_between_markers(args.course, text)
        print(f"written into {args.course.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
