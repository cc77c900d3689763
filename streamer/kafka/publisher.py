"""Publishes alerts and dead letters; the caller waits for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from streamer.codec import Alert, DeadLetter, encode_alert, encode_dead_letter
from streamer.kafka.batching import BatchingProducer, send_records


class Producer(Protocol):
    """What a one-record-at-a-time writer needs of a Kafka producer (AIOKafkaProducer fits)."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        """Enqueue a record; returns a future that resolves when it is acknowledged."""
        ...


class Publisher:
    """Sends one batch's output in order and reports when every record is acknowledged."""

    def __init__(self, producer: BatchingProducer, alert_topic: str, dead_letter_topic: str,
                 shadow_alert_topic: str | None = None) -> None:
        self.producer = producer
        self.alert_topic = alert_topic
        self.dead_letter_topic = dead_letter_topic
        self.shadow_alert_topic = shadow_alert_topic

    async def send(
        self, alerts: Sequence[Alert], dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
        shadow_alerts: Sequence[Alert] = (),
    ) -> asyncio.Future[Any]:
        """Enqueue alerts (keyed by device id) and dead letters (keyed by the raw key), in order.

        ``shadow_alerts`` (a candidate's, scored in shadow) go to the shadow
        alert topic, acknowledged like the rest.

        Records go to the producer as one record batch per partition
        (:func:`~streamer.kafka.batching.send_records`), not one await each.
        Returns once every record is handed to the producer (so the next
        batch's records follow them), with a future that completes when all
        are acknowledged.

        Until that future completes, the offsets this batch covers must not
        be committed.

        Raises:
            KafkaError: A record could not be enqueued.
        """
        pending: list[Any] = []
        if alerts:
            pending += await send_records(self.producer, self.alert_topic,
                                          ((None, alert.device_id.encode(), encode_alert(alert))
                                           for alert in alerts))
        if dead_letters:
            pending += await send_records(self.producer, self.dead_letter_topic,
                                          ((None, key, encode_dead_letter(letter))
                                           for key, letter in dead_letters))
        if shadow_alerts:
            if self.shadow_alert_topic is None:
                raise ValueError("shadow alerts without a shadow alert topic")
            pending += await send_records(self.producer, self.shadow_alert_topic,
                                          ((None, alert.device_id.encode(), encode_alert(alert))
                                           for alert in shadow_alerts))
        return asyncio.gather(*pending)
