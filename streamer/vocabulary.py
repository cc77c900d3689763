"""Every bounded set of label values the daemon reports, declared once.

Each set is a ``Literal`` type, which mypy checks wherever a value is used,
and the tuple of its values, which the metrics pre-register (a label value
that never occurred still shows, at 0) and the JSON Schemas enumerate. A set
is fixed so that metric cardinality stays bounded: a device id is never a
label.
"""

from __future__ import annotations

from typing import Literal, get_args

# Why a record was rejected (the dead letter's `reason`, label of
# streamer_readings_rejected_total). Decoding rejects the first ten; scoring the last three.
RejectionReason = Literal[
    "empty",  # no value (tombstone)
    "oversized",  # larger than readings.max_message_bytes
    "malformed_json",  # not parseable JSON
    "missing_field",  # device_id, ts or value(s) missing
    "wrong_type",  # a field of the wrong JSON type
    "non_finite",  # NaN or +-inf value
    "invalid_timestamp",  # unparseable, negative or too far in the future
    "invalid_device_id",  # empty, too long or failing readings.device_id_pattern
    "key_mismatch",  # Kafka key differs from device_id (would split device state)
    "channel_mismatch",  # channels differ from readings.channels
    "duplicate_timestamp",  # same event time as the device's last accepted reading
    "out_of_order",  # older than the device's last accepted reading
    "device_limit",  # a new device beyond buffers.max_devices
]
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)

# Why a feedback record changed nothing (the dead letter's `reason`, label of
# streamer_feedback_rejected_total). Parsing rejects the first five; applying it the rest.
FeedbackRejectionReason = Literal[
    "empty",  # no value
    "oversized",  # far larger than any feedback message
    "malformed_json",  # not parseable JSON
    "invalid_feedback",  # a field missing, of the wrong type or out of range (schema)
    "key_mismatch",  # Kafka key differs from the message's device_id / device_pattern
    "unknown_device",  # no device with this id in the partition's state
    "unknown_alert",  # no recent episode of the device has this alert_id
    "duplicate_feedback",  # the same message again, or an alert answered twice
]
FEEDBACK_REJECTION_REASONS: tuple[FeedbackRejectionReason, ...] = get_args(FeedbackRejectionReason)

# Why a flagged reading raised no alert (streamer_suppressed_flags_total):
# mute (an operator's mute), maintenance (a rule's maintenance window),
# muted_channel (a rule mutes the channel), feedback (below the bar a false
# alarm raised), new_normal (warming up again after a re-baseline).
SuppressionReason = Literal["mute", "maintenance", "muted_channel", "feedback", "new_normal"]
SUPPRESSION_REASONS: tuple[SuppressionReason, ...] = get_args(SuppressionReason)

# Why input partitions are paused (streamer_partitions_paused): their state is
# being restored, or the scoring queue is above batching.pause_high.
PauseReason = Literal["restore", "backpressure"]
PAUSE_REASONS: tuple[PauseReason, ...] = get_args(PauseReason)

# Work other than scoring that holds the scorer, so batches wait behind it
# (streamer_scoring_pause_seconds): snapshot (taking a slice of devices, or
# marking it written), restore (writing restored rows), replay (replaying
# input into restored state), release (forgetting a partition's devices),
# gauges (counting over every device), feedback (applying operator feedback),
# model (preparing a model to swap in, or swapping it).
PauseCause = Literal["snapshot", "restore", "replay", "release", "gauges", "feedback", "model"]
PAUSE_CAUSES: tuple[PauseCause, ...] = get_args(PauseCause)

# Why a partition's fetch position was reset to kafka.auto_offset_reset
# (streamer_offset_resets_total): out_of_range (the committed offset is no
# longer, or not yet, in the log), no_committed_offset (the group never
# committed there: a normal first start).
OffsetResetReason = Literal["out_of_range", "no_committed_offset"]
OFFSET_RESET_REASONS: tuple[OffsetResetReason, ...] = get_args(OffsetResetReason)

# How a device's snapshot was treated on assignment (streamer_state_restored_devices_total):
# rebuilt counts the restored devices whose snapshot was of another model
# (history restored, forecaster state rebuilt from the ring buffer).
RestoreOutcome = Literal["restored", "rebuilt", "stale", "mismatch"]
RESTORE_OUTCOMES: tuple[RestoreOutcome, ...] = get_args(RestoreOutcome)

# Log records that other programs act on carry one of these as `event` (streamer.logs):
# replay_pending: finished work will be redone by the next owner (a revoke or
# shutdown drain timed out); commit_failed: the broker refused an offset commit.
LogEvent = Literal["replay_pending", "commit_failed"]

# How an offset commit ended (streamer_commits_total).
CommitOutcome = Literal["ok", "failed"]
COMMIT_OUTCOMES: tuple[CommitOutcome, ...] = get_args(CommitOutcome)

# What the Alertmanager bridge posted (streamer_alertmanager_alerts_posted_total):
# an episode's event as it arrived, or `resend`, a firing episode posted again
# on the resend cadence so Alertmanager keeps it firing.
AlertmanagerPost = Literal["open", "update", "resolve", "resend"]
ALERTMANAGER_POSTS: tuple[AlertmanagerPost, ...] = get_args(AlertmanagerPost)

# Why a POST to Alertmanager failed (streamer_alertmanager_post_failures_total):
# unreachable (connection refused, timeout), server_error (5xx, 408, 429: retried),
# rejected (another 4xx: the alerts it held are counted and skipped, never retried).
AlertmanagerFailure = Literal["unreachable", "server_error", "rejected"]
ALERTMANAGER_FAILURES: tuple[AlertmanagerFailure, ...] = get_args(AlertmanagerFailure)

# Why a record of the alert topic was not bridged (streamer_alertmanager_records_rejected_total):
# empty (no value), malformed_json, invalid_alert (JSON that is not an alert of
# streamer/schemas/alert.schema.json).
AlertRecordRejection = Literal["empty", "malformed_json", "invalid_alert"]
ALERT_RECORD_REJECTIONS: tuple[AlertRecordRejection, ...] = get_args(AlertRecordRejection)

# Why the daemon refused to swap in (or shadow) a registry version
# (streamer_model_refusals_total): unreadable (missing, damaged, not a
# bundle, not in the registry), channels (other channels than
# readings.channels), validation (no finite validation metrics recorded),
# parity (its forecast on the fixed input differs from the recorded one).
ModelRefusalReason = Literal["unreadable", "channels", "validation", "parity"]
MODEL_REFUSAL_REASONS: tuple[ModelRefusalReason, ...] = get_args(ModelRefusalReason)
# Which registry name a model follows.
ModelRole = Literal["current", "candidate"]
MODEL_ROLES: tuple[ModelRole, ...] = get_args(ModelRole)
