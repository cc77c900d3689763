"""Publishes alerts and dead letters; the caller waits for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from streamer.codec import Alert, DeadLetter, encode_alert, encode_dead_letter


class Producer(Protocol):
    """What the publisher needs of a Kafka producer (AIOKafkaProducer fits)."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        """Enqueue a record; returns a future that resolves when it is acknowledged."""
        ...


class Publisher:
    """Sends one batch's output in order and reports when every record is acknowledged."""

    def __init__(self, producer: Producer, alert_topic: str, dead_letter_topic: str) -> None:
        self.producer = producer
        self.alert_topic = alert_topic
        self.dead_letter_topic = dead_letter_topic

    async def send(
        self, alerts: Sequence[Alert], dead_letters: Sequence[tuple[bytes | None, DeadLetter]]
    ) -> asyncio.Future[Any]:
        """Enqueue alerts (keyed by device id) and dead letters (keyed by the raw key), in order.

        Returns once every record is handed to the producer (so the next
        batch's records follow them), with a future that completes when all
        are acknowledged.

        Until that future completes, the offsets this batch covers must not
        be committed.

        Raises:
            KafkaError: A record could not be enqueued.
        """
        pending = [
            await self.producer.send(self.alert_topic, value=encode_alert(alert),
                                     key=alert.device_id.encode())
            for alert in alerts
        ]
        pending.extend([
            await self.producer.send(self.dead_letter_topic, value=encode_dead_letter(letter), key=key)
            for key, letter in dead_letters
        ])
        return asyncio.gather(*pending)
