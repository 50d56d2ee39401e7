"""One BLAS thread per pipeline process, set before numpy loads.

The models' matrices are small (a page's artwork candidates, a catalog's factors), and BLAS
worker threads spinning next to the event loop, and next to the other processes sharing the
cores, cost several times the work they save: on a 2-core machine the server made 6x fewer
first-visit pages per second with them (docs/bench.md, "Serving"). Entrypoints call
:func:`single_threaded` before anything imports numpy; an operator's own setting wins.
"""

from __future__ import annotations

import os

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded() -> None:
    """Ask BLAS for one thread unless the environment already says otherwise.

    >>> import os
    >>> single_threaded()
    >>> all(os.environ[v] for v in VARIABLES)
    True
    """
    for var in VARIABLES:
        os.environ.setdefault(var, "1")
