"""What the worker's and the server's Prometheus metrics have in common: the names a
collector exposes (for checking dashboards and alerts against the code)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.registry import Collector

#: Sample-name suffixes each metric type exposes besides its own name.
SUFFIXES = {"counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",)}


def exposed_names(collectors: Iterable[Collector]) -> set[str]:
    """Every sample name ``collectors`` expose, e.g. ``x_total`` for the counter ``x``.

    >>> from prometheus_client import CollectorRegistry, Counter
    >>> sorted(exposed_names([Counter("x", "x", registry=CollectorRegistry())]))
    ['x_created', 'x_total']
    """
    return {family.name + suffix
            for collector in collectors for family in collector.describe()
            for suffix in SUFFIXES.get(family.type, ("",))}
