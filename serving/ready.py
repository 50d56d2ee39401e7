"""Readiness of the server's dependencies beyond the store: the Kafka broker the impressions
are logged to.

:class:`BrokerCheck` runs a blocking probe (the impression producer's ``list_topics``, see
:meth:`serving.impressions.ImpressionLogger.check_broker`) in a worker thread, so the event
loop keeps serving while the broker is slow or gone; its answer is reused for ``ttl_s``
seconds, and concurrent ``/readyz`` requests share one probe in flight, so a dead broker
ties up at most one thread however often the server is probed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Seconds one broker metadata request may take before the broker counts as unavailable.
BROKER_TIMEOUT_S = 2.0
#: Seconds a broker check's answer (either way) is reused.
BROKER_TTL_S = 5.0

Probe = Callable[[float], object]


class BrokerCheck:
    """A cached, single-flight readiness check of the broker.

    Parameters
    ----------
    timeout_s
        Passed to the probe; the check also gives up one second after it.
    ttl_s
        How long an answer is reused.
    """

    def __init__(self, timeout_s: float = BROKER_TIMEOUT_S, ttl_s: float = BROKER_TTL_S) -> None:
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.probes = 0
        self._cached: tuple[float, str | None] | None = None
        self._inflight: asyncio.Future[str | None] | None = None

    async def check(self, probe: Probe) -> str | None:
        """``None`` when the broker answered ``probe`` (now or within ``ttl_s``), else why
        not."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run(probe))
        # shielded: a client giving up on /readyz must not cancel the probe others share
        return await asyncio.shield(self._inflight)

    async def _run(self, probe: Probe) -> str | None:
        self.probes += 1
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, probe, self.timeout_s),
                                   self.timeout_s + 1.0)
            reason = None
        except TimeoutError:
            reason = f"no answer to a metadata request within {self.timeout_s + 1.0:g}s"
        except Exception as exc:  # a probe: the failure is the answer
            reason = f"metadata request failed: {type(exc).__name__}: {exc}"
        self._cached = (time.monotonic(), reason)
        self._inflight = None
        return reason
