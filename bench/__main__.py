"""``python -m bench``: the ``bench`` command line."""

import sys

from bench.host.cli import main

sys.exit(main())
