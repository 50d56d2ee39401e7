"""``python -m serving``: run the home-page HTTP service with settings from the environment."""

from __future__ import annotations

import os

# Before numpy loads: a server process computes on one thread. The artwork policy's matrices
# are small, and BLAS worker threads spinning next to the event loop (and next to the other
# server processes) cost several times the work they save (measured: 6x fewer first-visit
# pages per second with them on a 2-core machine). An operator's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging  # noqa: E402
import sys  # noqa: E402

from homestream.settings import ConfigError, load_settings  # noqa: E402
from online_models.experiments import experiment_from_settings  # noqa: E402
from online_models.rules import rules_from_settings  # noqa: E402


def main() -> int:
    """Load settings (exit 2 naming the bad variable), then serve until interrupted."""
    try:
        settings = load_settings()
        rules_from_settings(settings)  # a bad rules file fails here, naming the setting
        experiment_from_settings(settings)  # and on a bad experiment
    except ConfigError as exc:
        print(f"serving: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # one access-log line per request costs more than serving the page; opt in if wanted
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from serving.app import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
