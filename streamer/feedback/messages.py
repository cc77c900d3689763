"""Feedback messages on ``kafka.feedback_topic``: what operators tell the detector.

One JSON object per record (schema: ``streamer/schemas/feedback.schema.json``),
keyed by the device id like the readings, so the daemon that owns a device's
input partition reads its feedback from the same partition number of the
feedback topic. A message for a device-id pattern (``mute``/``unmute`` with
``device_pattern``) has no single partition: ``streamer feedback`` writes one
copy to every partition, keyed by the pattern, and each daemon applies it to
the matching devices it owns.

Parsing never raises: a record that is not a valid message comes back as a
:class:`FeedbackRejection` with a reason from :data:`FEEDBACK_REJECTION_REASONS`.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from typing import Literal, get_args

import msgspec

from streamer.codec import Record
from streamer.vocabulary import FeedbackRejectionReason

FeedbackKind = Literal["false_alarm", "confirmed", "missed", "new_normal", "mute", "unmute"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = get_args(FeedbackKind)
SCHEMA_VERSION = 1
# Feedback is a few hundred bytes; anything far larger is not feedback.
MAX_FEEDBACK_BYTES = 16_384
_MAX_TS_MS = 253_402_300_799_999


class Feedback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One operator message (see the module docstring and the JSON Schema)."""

    kind: FeedbackKind
    device_id: str | None = None
    device_pattern: str | None = None  # mute/unmute only: a glob over device ids ("pump-*")
    alert_id: str | None = None  # false_alarm, confirmed
    start_ts: int | None = None  # missed: the anomaly's first reading (epoch ms)
    end_ts: int | None = None  # missed: its last reading
    channel: str | None = None  # missed: the channel it showed on (None: every channel)
    from_ts: int | None = None  # new_normal: readings from this time on are normal (None: now)
    until_ts: int | None = None  # mute: alerts suppressed for readings before this time
    reason: str | None = None
    author: str | None = None
    feedback_id: str | None = None  # unique per message (the CLI sets a UUID)
    ts: int | None = None  # when the operator gave it (epoch ms)
    schema_version: int = SCHEMA_VERSION

    def digest(self) -> int:
        """A 63-bit digest of the message: the same message twice has the same digest.

        >>> message = Feedback(kind="mute", device_id="a", until_ts=5)
        >>> message.digest() == Feedback(kind="mute", device_id="a", until_ts=5).digest()
        True
        """
        data = msgspec.json.encode(self, order="sorted")
        return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class FeedbackRejection:
    """A feedback record that changes nothing, and why."""

    reason: FeedbackRejectionReason
    detail: str


_decoder = msgspec.json.Decoder(Feedback)
_encoder = msgspec.json.Encoder()


def encode_feedback(message: Feedback) -> bytes:
    """JSON bytes of a feedback message."""
    return _encoder.encode(message)


def new_feedback(kind: FeedbackKind, **fields: object) -> Feedback:
    """A message stamped with a fresh ``feedback_id`` and the current time (what the CLI sends)."""
    stamped: dict[str, object] = {"feedback_id": str(uuid.uuid4()), "ts": int(time.time() * 1000), **fields}
    return msgspec.convert({"kind": kind, **stamped}, Feedback)


def feedback_key(message: Feedback) -> bytes:
    """The Kafka key: the device id, or the pattern of a pattern message."""
    target = message.device_id if message.device_id is not None else message.device_pattern
    return (target or "").encode()


@functools.lru_cache(maxsize=64)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The compiled glob ``pattern`` (``*``, ``?``, ``[...]``), matching whole device ids.

    >>> bool(pattern_regex("pump-*").fullmatch("pump-17")), bool(pattern_regex("pump-*").fullmatch("fan-1"))
    (True, False)
    """
    return re.compile(fnmatch.translate(pattern))


def parse_feedback(record: Record, device_id_pattern: re.Pattern[str]) -> Feedback | FeedbackRejection:
    """The message of ``record``, validated, or why it is rejected."""
    value = record.value
    if not value:
        return FeedbackRejection("empty", "record has no value")
    if len(value) > MAX_FEEDBACK_BYTES:
        return FeedbackRejection("oversized", f"{len(value)} bytes > {MAX_FEEDBACK_BYTES}")
    try:
        message = _decoder.decode(value)
    except msgspec.ValidationError as exc:
        return FeedbackRejection("invalid_feedback", str(exc)[:200])
    except msgspec.DecodeError as exc:
        return FeedbackRejection("malformed_json", str(exc)[:200])
    problem = _problem(message, device_id_pattern)
    if problem is not None:
        return FeedbackRejection("invalid_feedback", problem)
    key = record.key
    if key is not None and key != feedback_key(message):
        return FeedbackRejection("key_mismatch",
                                 "Kafka key differs from the message's device_id or device_pattern")
    return message


def _problem(message: Feedback, device_id_pattern: re.Pattern[str]) -> str | None:
    """What makes a decoded message invalid, or None."""
    kind = message.kind
    if message.schema_version != SCHEMA_VERSION:
        return f"schema_version {message.schema_version} is not {SCHEMA_VERSION}"
    if (message.device_id is None) == (message.device_pattern is None):
        return "give exactly one of device_id and device_pattern"
    if message.device_pattern is not None and kind not in ("mute", "unmute"):
        return f"{kind} names one device (device_id), not a pattern"
    if message.device_id is not None and not device_id_pattern.fullmatch(message.device_id):
        return f"device_id {message.device_id[:64]!r} does not match readings.device_id_pattern"
    if message.device_pattern is not None and not 0 < len(message.device_pattern) <= 256:
        return "device_pattern must have 1 to 256 characters"
    for name in ("start_ts", "end_ts", "from_ts", "until_ts", "ts"):
        value = getattr(message, name)
        if value is not None and not 0 <= value <= _MAX_TS_MS:
            return f"{name} {value} is not an event time (epoch ms)"
    required = {"false_alarm": ("alert_id",), "confirmed": ("alert_id",), "missed": ("start_ts", "end_ts"),
                "mute": ("until_ts",)}.get(kind, ())
    missing = [name for name in required if getattr(message, name) is None]
    if missing:
        return f"{kind} needs {', '.join(missing)}"
    if message.alert_id is not None:
        try:
            uuid.UUID(message.alert_id)
        except ValueError:
            return "alert_id is not a UUID"
    if kind == "missed" and message.start_ts is not None and message.end_ts is not None \
            and message.end_ts < message.start_ts:
        return "end_ts is before start_ts"
    return None
