"""``python -m homestream.player``: the ``homestream`` command."""

import sys

from homestream.player.cli import main

if __name__ == "__main__":
    sys.exit(main())
