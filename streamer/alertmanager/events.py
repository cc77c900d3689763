"""A record of the alert topic as the bridge sees it: the alert and its optional explanation.

The alert itself is decoded with the codec's :class:`~streamer.codec.Alert`
(the schema in ``streamer/schemas/alert.schema.json``). ``drivers``, a list
of the channels that moved the score, may or may not be on the record
(producers that predate it do not send it); it is read separately and
leniently, so a missing or malformed explanation never costs the alert.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from streamer.codec import Alert
from streamer.vocabulary import AlertRecordRejection


class Driver(msgspec.Struct, frozen=True):
    """One channel's part in an anomaly (fields the bridge does not need are ignored)."""

    channel: str
    share: float | None = None
    actual: float | None = None
    forecast: float | None = None
    residual: float | None = None


class _Explanation(msgspec.Struct, frozen=True):
    drivers: list[Driver] | None = None


@dataclass(frozen=True)
class AlertEvent:
    """A decoded alert record."""

    alert: Alert
    drivers: tuple[Driver, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A record that is not an alert, and why."""

    reason: AlertRecordRejection
    detail: str


def decode_event(value: bytes | None) -> AlertEvent | Rejected:
    """The alert in a record's value, or why there is none.

    >>> decode_event(b"{not json").reason, decode_event(b'{"event": "open"}').reason
    ('malformed_json', 'invalid_alert')
    """
    if not value:
        return Rejected("empty", "record has no value")
    try:
        document = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        return Rejected("malformed_json", str(exc)[:200])
    if not isinstance(document, dict):
        return Rejected("invalid_alert", "an alert is a JSON object")
    explanation = document.pop("drivers", None)
    try:
        alert = msgspec.convert(document, Alert)
    except msgspec.ValidationError as exc:
        return Rejected("invalid_alert", str(exc)[:200])
    try:
        drivers = msgspec.convert({"drivers": explanation}, _Explanation).drivers or []
    except msgspec.ValidationError:  # an explanation of another shape: the alert stands without it
        drivers = []
    return AlertEvent(alert, tuple(drivers))
