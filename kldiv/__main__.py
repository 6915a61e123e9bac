import sys

from kldiv.cli import main

sys.exit(main())
