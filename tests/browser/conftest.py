"""The browser suite: `make test-browser` (not collected by the plain `pytest` run).

One JupyterLab server and one Chromium serve every chapter; both are stopped, with every process
they started, when the session ends, also when a test fails or the run is interrupted.
"""

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import lab as L  # noqa: E402

REPORTS: list = []  # ChapterReport of every chapter checked, for the summary at the end


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # CI stops a job with SIGTERM: turn it into an interruption, so that the fixtures below still
    # stop the server, the kernels and Chromium.
    signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get(L.SCREENSHOTS_ENV) or L.REPO / "browser-screenshots").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.rglob("*.png"):
        old.unlink()
    return folder


@pytest.fixture(scope="session")
def browser():
    with L.Chromium() as chromium:
        yield chromium
    assert not chromium.survivors, f"Chromium processes still running: {chromium.survivors}"


@pytest.fixture(scope="session")
def lab():
    with L.JupyterLab(L.CHAPTERS) as server:
        yield server
    assert not server.survivors, f"processes of JupyterLab still running: {server.survivors}"


def pytest_terminal_summary(terminalreporter):
    if not REPORTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("the chapters in JupyterLab")
    for report in REPORTS:
        for line in report.summary().splitlines():
            write(line)
    explorers = sum(len(r.explorers) for r in REPORTS)
    interactions = sum(r.interactions for r in REPORTS)
    failed = [r.chapter for r in REPORTS if not r.ok]
    write(f"{len(REPORTS)} chapters, {explorers} explorers interacted with, {interactions} interactions, "
          f"{sum(r.seconds for r in REPORTS):.0f} s; failed: {', '.join(failed) or 'none'}")
