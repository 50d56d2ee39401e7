"""Confidence intervals for every evaluation: the one z-value helper and the one interval type.

Every interval the evaluations report is a normal approximation ``value ± z * se`` (or, for
replay's click rate, a Wilson interval around it); :func:`z_value` gives ``z`` for a coverage,
:data:`Z95` the 95% one, and :class:`Interval` carries an interval with its standard error.
The result types of the evaluations (``Estimate``, ``TakeFraction``, ``RatioStat``) expose
their interval as an :class:`Interval` (``.interval``) and build it here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["Z95", "Interval", "z_value"]


def z_value(confidence: float = 0.95) -> float:
    """The two-sided standard-normal quantile for ``confidence`` (1.959964 at 0.95).

    >>> round(z_value(0.95), 6), round(z_value(0.9), 4)
    (1.959964, 1.6449)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


#: ``z_value(0.95)``.
Z95 = z_value(0.95)


@dataclass(frozen=True)
class Interval:
    """``value`` with the interval ``[low, high]`` at ``confidence`` and its standard error
    (``nan`` when the interval is not a normal one)."""

    value: float
    low: float
    high: float
    se: float = math.nan
    confidence: float = 0.95

    @classmethod
    def normal(cls, value: float, se: float, confidence: float = 0.95) -> Interval:
        """``value ± z_value(confidence) * se``.

        >>> ci = Interval.normal(0.5, 0.1)
        >>> round(ci.low, 4), round(ci.high, 4), round(ci.half_width, 4)
        (0.304, 0.696, 0.196)
        """
        half = z_value(confidence) * se
        return cls(value, value - half, value + half, se, confidence)

    @property
    def half_width(self) -> float:
        """Half the interval's width (``z * se`` for a normal interval)."""
        return (self.high - self.low) / 2.0

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies in the interval (ends included)."""
        return self.low <= x <= self.high

    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0 (a significant difference)."""
        return self.low > 0.0 or self.high < 0.0

    def __str__(self) -> str:
        return f"{self.value:+.4f} ± {self.half_width:.4f}"
