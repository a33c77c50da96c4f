"""``python -m orchestra_kit``: the same as the ``orchestra`` command."""

import sys

from .cli import main

sys.exit(main())
