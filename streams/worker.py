"""Worker entrypoint: ``python -m streams.worker`` (or ``homestream worker``).

Creates the registry's topics if they are missing, then runs the Faust worker until
SIGINT/SIGTERM. Scale out by starting more workers with the same settings: partitions are
shared among them by the consumer group.
"""

from __future__ import annotations

from homestream.blas import single_threaded

single_threaded()  # before numpy loads (homestream.blas says why)

import gc
import logging
import sys

import faust

from homestream.logs import setup_logging
from homestream.settings import ConfigError, Settings, load_settings
from online_models.experiments import experiment_from_settings
from online_models.rules import rules_from_settings
from streams.app import build_app
from streams.metrics import serve as serve_metrics
from topics.registry import ensure_topics

#: The cyclic collector's thresholds in a worker (Python's default is 700, 10, 10). A worker
#: allocates containers by the hundred thousand a second (events, states, pages) and keeps a
#: large long-lived heap (members' states, models, the catalog): with the defaults the
#: collector ran ~1,000 young and ~100 older collections per 60,000 events, walking that heap,
#: and took 0.8 of the 4 CPU seconds of an in-process drain of the bench's backlog (0.46 of
#: 2.2 for live-shaped traffic); with a young threshold of 20,000, ~35 young collections and
#: 0.16-0.24 s per 100,000 events of the backlog, with 100,000 two and 0.04 s (live-shaped
#: traffic: under 0.03 s either way). Garbage in cycles is still collected, only less often.
GC_THRESHOLDS = (100_000, 20, 100)


def settle_heap() -> None:
    """Collect once, move everything alive after start-up (modules, the app, the catalog's
    classes) to the collector's permanent generation (``gc.freeze``) so no collection walks
    it again, and raise the collector's thresholds to :data:`GC_THRESHOLDS`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def page_core() -> str:
    """Which page assembly this install runs: ``compiled`` (``online_models._page_core``,
    built at install) or ``python`` (the reference: no C compiler at install)."""
    from online_models import page

    return "compiled" if page._page_core is not None else "python"


def run(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker process with ``settings`` until it is stopped."""
    setup_logging(settings.log_format)
    if page_core() == "compiled":
        logging.getLogger(__name__).info("page assembly: compiled")
    else:
        logging.getLogger(__name__).warning(
            "page assembly: python (the page core was not built: no C compiler at install; "
            "page assembly ~2x slower)")
    ensure_topics(settings)
    app = build_app(settings)
    settle_heap()
    if settings.worker_metrics_port:
        serve_metrics(settings.worker_metrics_port)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    worker.execute_from_commandline()


def main() -> int:
    try:
        settings = load_settings()
        rules_from_settings(settings)  # fail at start-up on a bad rules file, naming it
        experiment_from_settings(settings)  # and on a bad experiment
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
