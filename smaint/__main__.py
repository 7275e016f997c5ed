"""``python -m smaint``: the same as the ``smaint`` command."""

import sys

from smaint.cli import main

sys.exit(main())
