"""``python -m player``: the ``homestream`` command."""

import sys

from player.cli import main

if __name__ == "__main__":
    sys.exit(main())
