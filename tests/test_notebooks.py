"""The chapters as committed: executed top to bottom, without errors, small, with real checks.

(nbval re-runs them and compares the checked cells' output: `pytest` does both, see pyproject.)
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 1_500_000  # figures are embedded as PNGs; no megabytes of data


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapters found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_executed_and_clean(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"not executed top to bottom in one run: {counts}"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"error output: {out.get('ename')}: {out.get('evalue')}"
            assert out.get("name") != "stderr" or "Traceback" not in "".join(out.get("text", []))
    assert path.stat().st_size <= MAX_BYTES, f"{path.name} is {path.stat().st_size:,} bytes"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_check_cells_assert(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    checks = [("".join(c["source"])) for c in nb["cells"]
              if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert checks, f"{path.name} has no check cell (# NBVAL_CHECK_OUTPUT)"
    for source in checks:
        assert re.search(r"^\s*assert\b", source, re.M), f"a check cell only prints:\n{source[:300]}"
        assert "widgets" not in source and "__version__" not in source, "keep widgets and versions out of checks"
