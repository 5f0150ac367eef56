"""``python -m bertserve``: the same as the ``bertserve`` command."""

from __future__ import annotations

import sys

from bertserve.cli import main

sys.exit(main())
