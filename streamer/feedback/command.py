"""``streamer feedback``: write operator feedback to ``kafka.feedback_topic`` from the command line.

Any Kafka client can write the same messages (schema:
``streamer/schemas/feedback.schema.json``); this command fills in the id,
the time and the key, and sends a pattern message to every partition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from streamer.config import Config
from streamer.errors import StreamerError
from streamer.feedback.messages import (
    Feedback,
    FeedbackRejection,
    encode_feedback,
    feedback_key,
    new_feedback,
    parse_feedback,
)
from streamer.kafka.clients import ensure_topics, make_producer, partition_count

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def event_time(text: str) -> int:
    """Epoch milliseconds from an integer (ms), an ISO 8601 time, or a duration from now (``+2h``).

    >>> event_time("1700000000000"), event_time("2023-11-14T22:13:20Z")
    (1700000000000, 1700000000000)
    """
    if text.isdigit():
        return int(text)
    if text.startswith("+"):
        match = _DURATION.fullmatch(text[1:])
        if match is None:
            raise argparse.ArgumentTypeError(f"{text!r}: a duration is +N followed by s, m, h or d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return int((datetime.now(UTC) + timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not epoch ms, an ISO 8601 time or +duration") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``streamer feedback KIND ...`` to the command parser."""
    feedback = sub.add_parser(
        "feedback", help="tell the detector about an alert, a miss, a new normal or a mute",
        description="Write one operator feedback message to kafka.feedback_topic. The daemon that owns "
                    "the device applies it to the device's detector state at once.")
    kinds = feedback.add_subparsers(title="kinds", metavar="KIND", required=True)
    for kind, summary in (("false-alarm", "this alert was not an anomaly: the device becomes less "
                                          "sensitive to what raised it"),
                          ("confirmed", "this alert was a real anomaly")):
        parser = kinds.add_parser(kind, parents=[common], help=summary, description=summary)
        parser.set_defaults(feedback_kind=kind.replace("-", "_"))
        _device(parser)
        parser.add_argument("--alert-id", required=True, help="the alert's alert_id")
        _common_fields(parser)
    missed = kinds.add_parser("missed", parents=[common],
                              help="an anomaly that raised no alert: the device becomes more sensitive")
    _device(missed)
    missed.add_argument("--start", type=event_time, required=True, help="its first reading (ms, ISO 8601)")
    missed.add_argument("--end", type=event_time, required=True, help="its last reading")
    missed.add_argument("--channel", default=None, help="the channel it showed on (default: every channel)")
    _common_fields(missed)
    missed.set_defaults(feedback_kind="missed")
    renew = kinds.add_parser("new-normal", parents=[common],
                             help="what the device shows now is normal: re-baseline it")
    _device(renew)
    renew.add_argument("--from", dest="from_ts", type=event_time, default=None,
                       help="re-baseline at its first reading at or after this time (default: now)")
    _common_fields(renew)
    renew.set_defaults(feedback_kind="new_normal")
    mute = kinds.add_parser("mute", parents=[common],
                            help="suppress a device's (or matching devices') alerts until a time")
    _target(mute)
    mute.add_argument("--until", type=event_time, required=True,
                      help="end of the mute: ms, ISO 8601 or a duration from now (+2h, +3d)")
    _common_fields(mute)
    mute.set_defaults(feedback_kind="mute")
    unmute = kinds.add_parser("unmute", parents=[common], help="end a mute")
    _target(unmute)
    _common_fields(unmute)
    unmute.set_defaults(feedback_kind="unmute")
    feedback.set_defaults(command="feedback", handler=run)


def _device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True, help="the device id")


def _target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", default=None, help="the device id")
    target.add_argument("--pattern", default=None,
                        help="a glob over device ids (pump-*): applies to the matching devices "
                             "the detector knows")


def _common_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default=None, help="why (kept in the message)")
    parser.add_argument("--author", default=None, help="who (kept in the message)")
    parser.add_argument("--dry-run", action="store_true", help="print the message without sending it")


def build_message(args: argparse.Namespace) -> Feedback:
    """The message the arguments describe."""
    kind = args.feedback_kind
    fields: dict[str, object] = {"reason": args.reason, "author": args.author}
    device = getattr(args, "device", None)
    pattern = getattr(args, "pattern", None)
    if device is not None:
        fields["device_id"] = device
    else:
        fields["device_pattern"] = pattern
    if kind in ("false_alarm", "confirmed"):
        fields["alert_id"] = args.alert_id
    elif kind == "missed":
        fields.update(start_ts=args.start, end_ts=args.end, channel=args.channel)
    elif kind == "new_normal":
        fields["from_ts"] = args.from_ts
    elif kind == "mute":
        fields["until_ts"] = args.until
    return new_feedback(kind, **{name: value for name, value in fields.items() if value is not None})


def run(args: argparse.Namespace, config: Config) -> int:
    """Validate the message as the daemon will, then send it (to every partition for a pattern)."""
    message = build_message(args)
    data = encode_feedback(message)
    pattern = re.compile(config.readings.device_id_pattern)
    checked = parse_feedback(_Outgoing(feedback_key(message), data), pattern)
    if isinstance(checked, FeedbackRejection):
        sys.stderr.write(f"streamer feedback: {checked.reason}: {checked.detail}\n")
        return 2
    sys.stdout.write(json.dumps(json.loads(data)) + "\n")
    if args.dry_run:
        return 0
    try:
        asyncio.run(_send(config, message, data))
    except StreamerError as exc:
        sys.stderr.write(f"streamer feedback: {exc}\n")
        return 1
    return 0


async def _send(config: Config, message: Feedback, data: bytes) -> None:
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.feedback_topic])
    producer = make_producer(kafka)
    await producer.start()
    try:
        key = feedback_key(message)
        if message.device_pattern is None:
            await producer.send_and_wait(kafka.feedback_topic, data, key=key)
            return
        partitions = await partition_count(producer, kafka.feedback_topic)
        await asyncio.gather(*[producer.send_and_wait(kafka.feedback_topic, data, key=key, partition=p)
                               for p in range(partitions)])
    finally:
        await producer.stop()


class _Outgoing:
    """The record the command is about to send, for :func:`parse_feedback`."""

    topic = ""
    partition = 0
    offset = 0
    timestamp = 0

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key: bytes | None = key
        self.value: bytes | None = value
