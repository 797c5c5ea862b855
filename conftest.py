"""Settings for every pytest run here: the unit tests, and the chapters and solutions under nbval."""

import os
import shutil
import tempfile


def pytest_configure(config):
    # nbval re-executes the chapters, and each saves its figures. Their last digits differ from one
    # machine to another, so a test run would rewrite the committed figures/: they go to a folder of
    # their own instead (`python -m lfm2_edu.figures build` is what redraws figures/).
    if os.environ.get("LFM2_EDU_FIGURES"):
        return
    folder = tempfile.mkdtemp(prefix="lfm2_edu-test-figures-")
    os.environ["LFM2_EDU_FIGURES"] = folder
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
