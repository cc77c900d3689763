"""Client construction and consumer steering (no broker: a fake consumer stands in)."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from aiokafka import TopicPartition

from streamer.config import KafkaConfig
from streamer.kafka.clients import PartitionPauses, make_consumer
from tests.fakes import FakeConsumer

TP = [TopicPartition("readings", p) for p in range(3)]


def test_group_consumer_gets_the_static_member_id_and_reports_offset_errors() -> None:
    config = KafkaConfig(group_id="g", group_instance_id="streamer-0", auto_offset_reset="latest")
    with patch("streamer.kafka.clients.AIOKafkaConsumer") as consumer_class:
        make_consumer(config, max_records=100)
    kwargs = dict(consumer_class.call_args.kwargs)
    assert kwargs["group_instance_id"] == "streamer-0"
    assert kwargs["group_id"] == "g"
    assert kwargs["enable_auto_commit"] is False
    # Resets are made by the daemon (counted and logged), never silently by aiokafka.
    assert kwargs["auto_offset_reset"] == "none"


def test_a_partition_paused_for_restore_stays_paused_when_backpressure_lifts() -> None:
    consumer = FakeConsumer(TP)
    pauses = PartitionPauses(consumer)
    pauses.pause(TP[:2], "restore")
    pauses.pause_all("backpressure")
    assert consumer.paused() == set(TP)
    pauses.resume_all("backpressure")
    assert consumer.paused() == set(TP[:2])  # still being restored
    pauses.resume([TP[0]], "restore")
    assert consumer.paused() == {TP[1]}
    assert pauses.count("restore") == 1
    assert pauses.count("backpressure") == 0


def test_a_restored_partition_stays_paused_while_backpressure_holds() -> None:
    consumer = FakeConsumer(TP)
    pauses = PartitionPauses(consumer)
    pauses.pause(TP, "restore")
    pauses.pause_all("backpressure")
    pauses.resume(TP, "restore")
    assert consumer.paused() == set(TP)
    assert pauses.count("backpressure") == 3
    assert pauses.reasons(TP[0]) == {"backpressure"}
    pauses.resume_all("backpressure")
    assert consumer.paused() == set()


def test_backpressure_covers_partitions_assigned_later_and_revoked_ones_are_forgotten() -> None:
    consumer = FakeConsumer(TP[:1])
    pauses = PartitionPauses(consumer)
    pauses.pause([TP[0]], "restore")
    pauses.pause_all("backpressure")
    # An eager rebalance: everything revoked, a new set assigned (aiokafka forgets its flags).
    pauses.forget([TP[0]])
    consumer.assigned, consumer.paused_now = {TP[1], TP[2]}, set()
    pauses.apply()
    assert consumer.paused() == {TP[1], TP[2]}
    assert pauses.reasons(TP[0]) == {"backpressure"}  # nothing partition-specific is left
    pauses.resume_all("backpressure")
    assert consumer.paused() == set()


@pytest.mark.parametrize("reason", ["restore", "backpressure"])
def test_resuming_a_reason_that_was_never_given_changes_nothing(reason: str) -> None:
    consumer = FakeConsumer(TP)
    pauses = PartitionPauses(consumer)
    pauses.pause([TP[2]], "restore" if reason == "backpressure" else "backpressure")
    pauses.resume([TP[2]], reason)
    pauses.resume_all(reason)
    assert consumer.paused() == {TP[2]}
