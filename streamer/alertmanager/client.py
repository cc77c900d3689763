"""One POST of alerts to Alertmanager's v2 API, and what its answer means.

The standard library's HTTP client runs on a worker thread
(``asyncio.to_thread``): the bridge sends a request every few seconds at
most, so an async HTTP library would add a dependency for no gain.

Alertmanager 0.25 stores the valid alerts of a batch and answers 400 if any
was invalid, so a 4xx does not mean that the whole batch was lost; the
caller (``streamer.alertmanager.delivery``) posts such a batch again one
alert at a time to find the refused ones.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streamer.errors import StreamerError
from streamer.vocabulary import AlertmanagerFailure

ALERTS_PATH = "/api/v2/alerts"
# Client errors that mean "not now" rather than "never": retried like a 5xx.
RETRIED_4XX = frozenset({408, 429})


class AlertmanagerUnavailable(StreamerError):
    """Alertmanager could not take the alerts now (unreachable, 5xx, 408, 429); retry later."""

    retriable = True

    def __init__(self, reason: AlertmanagerFailure, detail: str) -> None:
        self.reason = reason
        super().__init__(f"Alertmanager {reason.replace('_', ' ')}: {detail}")


@dataclass(frozen=True)
class PostResult:
    """A final answer: accepted (2xx) or refused (any other 4xx), with the body of a refusal."""

    status: int
    detail: str = ""

    @property
    def accepted(self) -> bool:
        """Whether Alertmanager took every alert."""
        return 200 <= self.status < 300


class Poster(Protocol):
    """The seam the bridge posts through (:class:`AlertmanagerClient`, or a fake in tests)."""

    async def post(self, alerts: Sequence[Mapping[str, Any]]) -> PostResult:
        """POST ``alerts``; raise :class:`AlertmanagerUnavailable` when it may work later."""
        ...


class AlertmanagerClient:
    """Posts alerts to ``<url>/api/v2/alerts``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Alertmanager URL must be http(s), got {url!r}")
        self.endpoint = url.rstrip("/") + ALERTS_PATH
        self.timeout_s = timeout_s

    async def post(self, alerts: Sequence[Mapping[str, Any]]) -> PostResult:
        """POST ``alerts`` as one JSON list.

        Raises:
            AlertmanagerUnavailable: No answer, or an answer that asks to retry.
        """
        body = json.dumps(list(alerts), separators=(",", ":")).encode()
        return await asyncio.to_thread(self._post, body)

    def _post(self, body: bytes) -> PostResult:
        request = urllib.request.Request(self.endpoint, data=body, method="POST",  # noqa: S310  # http(s) checked in __init__
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310  # as above
                return PostResult(response.status)
        except urllib.error.HTTPError as exc:
            detail = _body(exc)
            if exc.code >= 500 or exc.code in RETRIED_4XX:
                raise AlertmanagerUnavailable("server_error", f"HTTP {exc.code} {detail}") from None
            return PostResult(exc.code, detail)
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
            raise AlertmanagerUnavailable("unreachable", str(exc)) from None


def _body(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(500).decode("utf-8", errors="replace").strip()
    except OSError:
        return ""
