"""Exceptions raised by streamer.

Every error derives from one root so callers can catch streamer's failures
without catching everything::

    StreamerError
    ├── ConfigError          invalid configuration (names the file and key path)
    ├── BrokerError          the Kafka cluster misbehaved or is unreachable
    │   └── TopicSetupError  a required topic is missing and could not be created
    ├── EmbeddedBrokerError  the bundled Tansu broker could not be started
    └── PipelineError        scoring failed; the batch was not committed

``retriable`` says whether repeating the same operation may succeed.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Root of every exception streamer raises on purpose."""

    retriable: bool = False


class ConfigError(StreamerError):
    """The configuration is invalid.

    The message is ``<source>: <key.path>: <reason>`` so the operator can go
    straight to the line to fix.
    """

    def __init__(self, source: str, key_path: str, reason: str) -> None:
        self.source = source
        self.key_path = key_path
        self.reason = reason
        location = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{location}: {reason}")


class BrokerError(StreamerError):
    """The Kafka cluster is unreachable or answered with an error."""

    retriable = True


class TopicSetupError(BrokerError):
    """A topic the daemon needs does not exist and could not be created."""

    retriable = False

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r}: {reason}")


class EmbeddedBrokerError(StreamerError):
    """The embedded Tansu broker binary is missing or failed to start."""


class PipelineError(StreamerError):
    """Scoring a batch failed; none of its offsets were committed."""

    def __init__(self, reason: str, *, partition: int | None = None) -> None:
        self.partition = partition
        super().__init__(reason)
