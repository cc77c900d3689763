"""Publishes alerts and dead letters and waits for the broker's acknowledgement."""

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
    """Sends one batch's output; returns only when every record is acknowledged."""

    def __init__(self, producer: Producer, alert_topic: str, dead_letter_topic: str) -> None:
        self.producer = producer
        self.alert_topic = alert_topic
        self.dead_letter_topic = dead_letter_topic

    async def publish(
        self, alerts: Sequence[Alert], dead_letters: Sequence[tuple[bytes | None, DeadLetter]]
    ) -> None:
        """Send alerts (keyed by device id) and dead letters (keyed by the raw key).

        Raises:
            KafkaError: A record was not acknowledged; the caller must not
                commit the offsets this batch covers.
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
        if pending:
            await asyncio.gather(*pending)
