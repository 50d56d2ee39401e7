"""``python -m serving``: run the home-page HTTP service with settings from the environment."""

from __future__ import annotations

from homestream.blas import single_threaded

single_threaded()  # before numpy loads (homestream.blas says why)

import logging
import sys

from homestream.logs import setup_logging
from homestream.settings import ConfigError, load_settings
from online_models.experiments import experiment_from_settings
from online_models.rules import rules_from_settings


def main() -> int:
    """Load settings (exit 2 naming the bad variable), then serve until interrupted."""
    try:
        settings = load_settings()
        rules_from_settings(settings)  # a bad rules file fails here, naming the setting
        experiment_from_settings(settings)  # and on a bad experiment
    except ConfigError as exc:
        print(f"serving: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format)
    # one access-log line per request costs more than serving the page; opt in if wanted
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from serving.app import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
