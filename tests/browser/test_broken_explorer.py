"""The checker itself: an explorer whose callback breaks must fail its chapter, by name.

Chapter 02's token explorer redraws through `lfm2_edu.viz.tokens.tokens_html`, which the chapter
also calls in its own cells. The kernel startup file (kernel_startup.py) lets that function work
when a cell runs and raise when a widget calls it, as a broken callback would. The chapter must
then be reported failed, naming the explorer's cell, while all its cells ran without errors.
"""

import lab as L

BROKEN = "lfm2_edu.viz.tokens:tokens_html"


def test_a_broken_explorer_fails_its_chapter(browser, screenshots):
    chapter = next(p for p in L.CHAPTERS if p.name.startswith("02_"))
    with L.JupyterLab([chapter], env={L.BREAK_ENV: BROKEN}) as broken_lab:
        report = L.check_chapter(browser, broken_lab, chapter.name, screenshots / "broken")
    print(report.summary())
    assert not broken_lab.survivors
    assert report.executed == report.code_cells and not report.errors, report.summary()  # the cells all ran
    explorer = next(e for e in report.explorers if "token_explorer" in e.code)
    assert not report.ok and explorer.failures, report.summary()
    assert all("token_explorer" in f and "did not change" in f for f in explorer.failures)
    assert len(explorer.failures) == len(explorer.interactions)  # every interaction found it broken
