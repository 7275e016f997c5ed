"""``python -m edge run``: the gateway without the ``smaint`` wrapper."""

import sys

from edge.cli import main

sys.exit(main(sys.argv[1:]))
