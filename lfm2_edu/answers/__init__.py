"""The expected answers of the chapters' exercises, computed from what each chapter passes in.

One module per chapter (ch09.py for chapter 09, ...): each function is registered under its
exercise's key ("NN.i") with the tolerance its check uses; a chapter's check cell calls
`check_exercise("NN.i", answer, **what it needs)` and so never holds the answer itself. The
solutions (solutions/NN_*.ipynb) call the same checks. Reading these files is reading the
solutions: students, try the exercise first.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):  # every chapter's module registers its exercises
    importlib.import_module(f"{__name__}.{_module.name}")
