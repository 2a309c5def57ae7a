"""``python -m orchestrator.cli``: the same as the ``anymoda`` command."""

import sys

from .commands import main

sys.exit(main())
