"""Every chapter, as a student opens it: JupyterLab in Chromium, all cells run, every explorer worked.

For each notebooks/NN_*.ipynb: no error output, no widget that failed to display, no JavaScript
error, and every control of every explorer (each displayed ipywidget with a control) changes
what the explorer shows. Screenshots go to browser-screenshots/ (or $LFM2_EDU_SCREENSHOTS).
"""

import pytest

import lab as L
from conftest import REPORTS


def test_there_are_chapters():
    assert L.CHAPTERS, "no chapters found in notebooks/"


@pytest.mark.parametrize("chapter", [p.name for p in L.CHAPTERS], ids=[p.stem for p in L.CHAPTERS])
def test_chapter_runs_and_its_explorers_respond(chapter, lab, browser, screenshots):
    report = L.check_chapter(browser, lab, chapter, screenshots)
    REPORTS.append(report)
    print(report.summary())
    assert report.code_cells > 0 and report.executed == report.code_cells, report.summary()
    assert report.ok, "\n".join(report.failures)
