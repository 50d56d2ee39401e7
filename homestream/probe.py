"""``python -m homestream.probe URL [TIMEOUT_S]``: the containers' health check.

Exits 0 when ``URL`` answers a GET with a 2xx status within ``TIMEOUT_S`` (default 3), else
1, printing the status and the start of the body (a ``/ready`` answer names what failed).
The image has no ``curl``; this needs only the standard library.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_TIMEOUT_S = 3.0


def probe(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[bool, str]:
    """``(healthy, what was seen)`` for one GET of ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(500).decode(errors="replace")
            return 200 <= resp.status < 300, f"{resp.status} {body}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.read(500).decode(errors='replace')}"
    except (OSError, ValueError) as exc:
        return False, f"no answer: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: python -m homestream.probe URL [TIMEOUT_S]", file=sys.stderr)
        return 2
    healthy, seen = probe(args[0], float(args[1]) if len(args) > 1 else DEFAULT_TIMEOUT_S)
    print(f"{args[0]}: {seen}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
