"""``python -m cloud ...``: the same as ``smaint cloud ...``."""

from __future__ import annotations

import sys

from cloud.cli import main

sys.exit(main(sys.argv[1:]))
