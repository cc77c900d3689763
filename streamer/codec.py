"""Wire formats: readings in, alerts and dead letters out.

A fetched batch of Kafka records is decoded in one call into columnar numpy
arrays (:class:`ReadingBatch`). Each record's bytes are parsed by msgspec on
their own rather than by joining the payloads into one JSON array: a crafted
payload could otherwise move JSON boundaries into its neighbour and forge a
reading. Records that fail any check come back as :class:`Rejection` with a
reason from :data:`REASONS`; none is dropped.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from streamer.vocabulary import REJECTION_REASONS, RejectionReason

# Every reason a reading can be rejected for (declared in streamer.vocabulary).
REASONS = REJECTION_REASONS
Reason = RejectionReason

# Latest event time accepted as epoch milliseconds: year 9999.
_MAX_TS_MS = 253_402_300_799_999


class Record(Protocol):
    """What the codec needs of a Kafka record (aiokafka's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


class WireReading(msgspec.Struct, frozen=True):
    """A reading as it arrives: one ``value`` or named ``values``."""

    device_id: str
    ts: int | float | str
    value: float | None = None
    values: dict[str, float] | None = None


class Driver(msgspec.Struct, frozen=True, kw_only=True):
    """One channel behind an alert: its reading, forecast and share of the row's score."""

    channel: str
    # None where not finite (JSON has no NaN).
    actual: float | None
    forecast: float | None
    residual: float | None
    score: float  # the channel's own score in [0, 1]
    share: float  # score / the sum of every channel's score in the row


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """An alert event as published to the alert topic (keyed by device id).

    Schema version 2 added ``drivers``; a version 1 alert (without it) still
    decodes, with no drivers.
    """

    alert_id: str
    event: Literal["open", "update", "resolve"]
    device_id: str
    ts: int  # event time of the reading that caused this event (epoch ms)
    episode_start_ts: int
    channel: str
    actual: float
    forecast: float
    residual: float
    # None where the method had no value yet for a reading another detector
    # flagged (e.g. range novelty before the dynamic threshold has chosen one).
    smoothed_residual: float | None
    threshold: float | None
    score: float
    method: str
    model_version: str
    processing_ms: float  # fetch of the reading -> decision
    latency_ms: float  # event time -> alert handed to the producer
    # The channels with a score above 0, highest share first (at most
    # streamer.alerts.events.MAX_DRIVERS); the first is ``channel``.
    drivers: tuple[Driver, ...] = ()
    schema_version: int = 2


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A rejected record, with enough context to find and replay it."""

    reason: str
    detail: str
    source_topic: str
    partition: int
    offset: int
    kafka_timestamp: int
    key: str | None  # UTF-8 text of the key (invalid bytes replaced)
    value: str | None
    key_base64: str | None  # exact bytes
    value_base64: str | None
    rejected_at: int  # epoch ms
    schema_version: int = 1


@dataclass(frozen=True)
class Rejection:
    """A record that will not be scored, and why."""

    record_index: int  # position in the fetched record list
    reason: Reason
    detail: str


@dataclass
class ReadingBatch:
    """Columnar readings ready for scoring (one row per accepted record)."""

    device_ids: list[str]
    ts_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]  # (n, channels)
    fetched_at: npt.NDArray[np.float64]  # wall clock (s) when the record was fetched
    record_index: npt.NDArray[np.intp]  # position in the fetched record list

    def __len__(self) -> int:
        return len(self.device_ids)

    @classmethod
    def empty(cls, channels: int) -> ReadingBatch:
        """A batch with no rows."""
        return cls(
            device_ids=[],
            ts_ms=np.empty(0, np.int64),
            values=np.empty((0, channels), np.float64),
            fetched_at=np.empty(0, np.float64),
            record_index=np.empty(0, np.intp),
        )

    @classmethod
    def concat(cls, batches: Sequence[ReadingBatch], channels: int) -> ReadingBatch:
        """Join batches in order."""
        if not batches:
            return cls.empty(channels)
        if len(batches) == 1:
            return batches[0]
        return cls(
            device_ids=[d for b in batches for d in b.device_ids],
            ts_ms=np.concatenate([b.ts_ms for b in batches]),
            values=np.concatenate([b.values for b in batches]),
            fetched_at=np.concatenate([b.fetched_at for b in batches]),
            record_index=np.concatenate([b.record_index for b in batches]),
        )


@dataclass
class DecodedBatch:
    """Result of decoding one fetched record list."""

    readings: ReadingBatch
    rejections: list[Rejection] = field(default_factory=list)


class ReadingDecoder:
    """Decodes fetched records into a :class:`ReadingBatch` plus rejections."""

    def __init__(
        self,
        channels: Sequence[str],
        *,
        device_id_pattern: str,
        max_message_bytes: int,
        max_future_ms: int,
    ) -> None:
        self.channels = list(channels)
        self._decoder = msgspec.json.Decoder(WireReading)
        self._device_id_re = re.compile(device_id_pattern)
        self.max_message_bytes = max_message_bytes
        self.max_future_ms = max_future_ms

    def decode(self, records: Sequence[Record], fetched_at: float | None = None) -> DecodedBatch:
        """Decode a fetched batch.

        Args:
            records: Kafka records in fetch order.
            fetched_at: Wall-clock time of the fetch (``time.time()`` if None).
        """
        fetched_at = time.time() if fetched_at is None else fetched_at
        now_ms = int(fetched_at * 1000)
        rejections: list[Rejection] = []
        decoded: list[WireReading | None] = [None] * len(records)
        decode = self._decoder.decode
        limit = self.max_message_bytes
        for index, record in enumerate(records):
            value = record.value
            if value is None or not value:
                rejections.append(Rejection(index, "empty", "record has no value"))
            elif len(value) > limit:
                rejections.append(Rejection(index, "oversized", f"{len(value)} bytes > {limit}"))
            else:
                try:
                    decoded[index] = decode(value)
                except msgspec.ValidationError as exc:
                    rejections.append(_classify_validation_error(index, str(exc)))
                except msgspec.DecodeError as exc:
                    rejections.append(_classify_decode_error(index, value, str(exc)))

        rows: list[int] = []
        device_ids: list[str] = []
        ts_list: list[int] = []
        value_rows: list[Sequence[float]] = []
        for index, reading in enumerate(decoded):
            if reading is None:
                continue
            try:
                ts, vector = self._validate(records[index], reading, now_ms)
            except _Invalid as invalid:
                rejections.append(Rejection(index, invalid.reason, invalid.detail))
                continue
            rows.append(index)
            device_ids.append(reading.device_id)
            ts_list.append(ts)
            value_rows.append(vector)

        count = len(rows)
        values = np.array(value_rows, dtype=np.float64).reshape(count, len(self.channels))
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            rejections.extend(
                Rejection(rows[row], "non_finite", "value is NaN or infinite")
                for row in np.flatnonzero(~finite).tolist()
            )
            keep = np.flatnonzero(finite)
            rows = [rows[i] for i in keep.tolist()]
            device_ids = [device_ids[i] for i in keep.tolist()]
            ts_list = [ts_list[i] for i in keep.tolist()]
            values = values[keep]
        record_index = np.array(rows, dtype=np.intp)
        readings = ReadingBatch(
            device_ids=device_ids,
            ts_ms=np.array(ts_list, dtype=np.int64),
            values=values,
            fetched_at=np.full(len(rows), fetched_at, dtype=np.float64),
            record_index=record_index,
        )
        rejections.sort(key=lambda r: r.record_index)
        return DecodedBatch(readings=readings, rejections=rejections)

    def _validate(
        self, record: Record, reading: WireReading, now_ms: int
    ) -> tuple[int, Sequence[float]]:
        """The event time and channel vector of a decoded reading, or raise ``_Invalid``."""
        device_id = reading.device_id
        if not self._device_id_re.fullmatch(device_id):
            raise _Invalid("invalid_device_id", f"device_id {device_id[:64]!r} does not match the pattern")
        key = record.key
        if key is not None and key != device_id.encode():
            raise _Invalid("key_mismatch", "Kafka key differs from device_id")
        ts = _parsed_ts(reading.ts)
        if ts < 0 or ts > _MAX_TS_MS:
            raise _Invalid("invalid_timestamp", f"ts {str(reading.ts)[:40]!r} is not a valid event time")
        if ts > now_ms + self.max_future_ms:
            raise _Invalid("invalid_timestamp", "ts is too far in the future")
        if reading.value is not None and reading.values is not None:
            raise _Invalid("wrong_type", "give either value or values, not both")
        if reading.value is not None:
            if len(self.channels) != 1:
                raise _Invalid("channel_mismatch", f"expected values for channels {self.channels}")
            return ts, (reading.value,)
        if reading.values is None:
            raise _Invalid("missing_field", "Object missing required field `value` or `values`")
        values = reading.values
        try:
            return ts, [values[name] for name in self.channels]
        except KeyError as exc:
            raise _Invalid("channel_mismatch", f"missing channel {exc.args[0]!r}") from None


class _Invalid(Exception):  # internal control flow, never escapes the decoder
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _parsed_ts(ts: int | float | str) -> int:
    """Event time as epoch ms; -1 when it cannot be parsed (rejected later).

    >>> _parsed_ts(1700000000123), _parsed_ts("2023-11-14T22:13:20.123Z")
    (1700000000123, 1700000000123)
    """
    if isinstance(ts, int):
        return ts
    if isinstance(ts, float):
        return int(ts) if math.isfinite(ts) else -1
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return -1
    if parsed.tzinfo is None:  # naive ISO-8601 is read as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp() * 1000)


def _classify_decode_error(index: int, value: bytes, message: str) -> Rejection:
    # JSON has no NaN/Infinity, but Python's json.dumps writes them, and the
    # stdlib parser reads them back: such payloads are non-finite readings,
    # not malformed ones. Only bad records pay for this second parse.
    try:
        json.loads(value)
    except ValueError:
        return Rejection(index, "malformed_json", message[:200])
    return Rejection(index, "non_finite", "value is NaN or infinite")


def _classify_validation_error(index: int, message: str) -> Rejection:
    if message.startswith("Object missing required field"):
        return Rejection(index, "missing_field", message[:200])
    if message.startswith("Number out of range"):  # e.g. 1e400, which would be inf
        return Rejection(index, "non_finite", message[:200])
    return Rejection(index, "wrong_type", message[:200])


_alert_encoder = msgspec.json.Encoder()


def encode_alert(alert: Alert) -> bytes:
    """JSON bytes of an alert."""
    return _alert_encoder.encode(alert)


def decode_alert(data: bytes) -> Alert:
    """Parse an alert (for subscribers, tests and the demo)."""
    return msgspec.json.decode(data, type=Alert)


def dead_letter(record: Record, rejection: Rejection, now_ms: int | None = None) -> DeadLetter:
    """The dead-letter message for a rejected record."""
    return dead_letter_of(record, rejection.reason, rejection.detail, now_ms)


def dead_letter_of(record: Record, reason: str, detail: str, now_ms: int | None = None) -> DeadLetter:
    """The dead-letter message for a record rejected for ``reason`` (a reading's or a feedback message's)."""
    return DeadLetter(
        reason=reason,
        detail=detail,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        kafka_timestamp=record.timestamp,
        key=_text(record.key),
        value=_text(record.value),
        key_base64=_b64(record.key),
        value_base64=_b64(record.value),
        rejected_at=int(time.time() * 1000) if now_ms is None else now_ms,
    )


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """JSON bytes of a dead letter."""
    return _alert_encoder.encode(letter)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def encode_reading(device_id: str, ts_ms: int, value: float | dict[str, float]) -> bytes:
    """JSON bytes of a reading (used by the simulator)."""
    payload: dict[str, Any] = {"device_id": device_id, "ts": ts_ms}
    if isinstance(value, dict):
        payload["values"] = value
    else:
        payload["value"] = value
    return _alert_encoder.encode(payload)
