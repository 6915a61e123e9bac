"""``python -m kldiv``: the ``kldiv`` command."""

import sys

from kldiv.cli import main

sys.exit(main())
