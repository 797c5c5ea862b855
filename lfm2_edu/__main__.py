"""`python -m lfm2_edu generate|route|info ...`: the command line of cli.py."""

import sys

from .cli import main

sys.exit(main())
