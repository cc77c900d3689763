"""Posting until Alertmanager accepts: retries with backoff, and a refused batch split up.

- Unavailable (unreachable, 5xx, 408, 429): wait a :class:`Backoff` delay and
  post again, without end, so no alert (and no resolve) is ever dropped for
  an outage; the caller commits nothing meanwhile. A stop request ends the
  wait with :class:`DeliveryAbandoned`.
- Refused (another 4xx): a batch of several alerts is posted again one alert
  at a time (Alertmanager stored the valid ones already; posting them again
  is harmless); an alert refused on its own is counted, logged and skipped,
  so one bad alert never blocks the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamer.alertmanager.backoff import Backoff
from streamer.alertmanager.client import AlertmanagerUnavailable, Poster, PostResult
from streamer.alertmanager.metrics import BridgeMetrics
from streamer.errors import StreamerError

log = logging.getLogger(__name__)


class DeliveryAbandoned(StreamerError):
    """A stop was requested while alerts still waited for Alertmanager (their offsets stay uncommitted)."""


@dataclass(frozen=True)
class Delivered:
    """Which alerts of a delivery Alertmanager accepted (in the order given); the others it refused."""

    accepted: tuple[bool, ...]

    @property
    def refused(self) -> int:
        """How many it refused."""
        return self.accepted.count(False)


class Delivery:
    """Delivers batches of alerts through a :class:`Poster`."""

    def __init__(self, poster: Poster, backoff: Backoff, metrics: BridgeMetrics, stop: asyncio.Event) -> None:
        self.poster = poster
        self.backoff = backoff
        self.metrics = metrics
        self.stop = stop

    async def deliver(self, alerts: Sequence[Mapping[str, Any]]) -> Delivered:
        """Post ``alerts`` until Alertmanager accepts them or refuses some for good.

        Raises:
            DeliveryAbandoned: Stop was requested before they were accepted.
        """
        if not alerts:
            return Delivered(())
        result = await self._post_until_answered(alerts)
        if result.accepted:
            return Delivered((True,) * len(alerts))
        if len(alerts) == 1:
            self.metrics.alerts_refused.inc()
            log.error("Alertmanager refused alert %s (HTTP %d: %s); skipped",
                      alerts[0].get("labels", {}).get("alert_id"), result.status, result.detail)
            return Delivered((False,))
        log.warning("Alertmanager refused a batch of %d alerts (HTTP %d: %s); posting them one by one",
                    len(alerts), result.status, result.detail)
        accepted: list[bool] = []
        for alert in alerts:
            accepted.extend((await self.deliver([alert])).accepted)
        return Delivered(tuple(accepted))

    async def _post_until_answered(self, alerts: Sequence[Mapping[str, Any]]) -> PostResult:
        while True:
            try:
                result = await self.poster.post(alerts)
            except AlertmanagerUnavailable as exc:
                self.metrics.post_failures.labels(exc.reason).inc()
                delay = self.backoff.next_delay()
                log.warning("%s; retrying in %.1f s (attempt %d)", exc, delay, self.backoff.attempts)
                if await self._stopped_within(delay):
                    raise DeliveryAbandoned(f"stopped with {len(alerts)} alerts undelivered") from exc
                self.metrics.retries.inc()
                continue
            self.backoff.reset()
            if not result.accepted:
                self.metrics.post_failures.labels("rejected").inc()
            return result

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            return False
        return True
