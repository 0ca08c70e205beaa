"""``python -m graph``: see graph/cli.py."""

import sys

from graph.cli import main

sys.exit(main())
