"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, served from a thread.

A thread rather than the event loop: a scrape or probe must answer even when
the loop is busy, and a stalled loop must show as a failing ``/healthz``
rather than as a probe that times out for unrelated reasons.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


@dataclass
class Health:
    """Liveness and readiness, updated by the daemon, read by the probes.

    Live while the event loop keeps beating, no fatal error was recorded,
    the brokers answered within ``unreachable_after_s`` and the committed
    offsets advanced (or nothing was waiting) within ``commit_stall_after_s``
    (``None`` turns either check off). Ready while live, consuming, and not
    shutting down. The daemon stops itself once it is not live, so these
    are also the conditions under which it exits non-zero.
    """

    stall_after_s: float = 30.0
    unreachable_after_s: float | None = None
    commit_stall_after_s: float | None = None
    ready: bool = False
    fatal: str | None = None
    last_beat: float = field(default_factory=time.monotonic)
    last_contact: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        """Called by the event loop's watchdog task."""
        self.last_beat = time.monotonic()

    def contact(self) -> None:
        """The brokers answered."""
        self.last_contact = time.monotonic()

    def progressed(self) -> None:
        """Offsets were committed, or no record was waiting for a commit."""
        self.last_progress = time.monotonic()

    def live(self) -> tuple[bool, str]:
        """Whether the process should be left running, and why not."""
        if self.fatal is not None:
            return False, f"fatal: {self.fatal}"
        now = time.monotonic()
        stalled = now - self.last_beat
        if stalled > self.stall_after_s:
            return False, f"event loop stalled for {stalled:.1f}s"
        silent = now - self.last_contact
        if self.unreachable_after_s is not None and silent > self.unreachable_after_s:
            return False, f"brokers unreachable for {silent:.1f}s"
        stuck = now - self.last_progress
        if self.commit_stall_after_s is not None and stuck > self.commit_stall_after_s:
            return False, f"no offset committed for {stuck:.1f}s while records were waiting"
        return True, "ok"

    def is_ready(self) -> tuple[bool, str]:
        """Whether the process should receive traffic (is scoring)."""
        live, why = self.live()
        if not live:
            return False, why
        return (True, "ok") if self.ready else (False, "not consuming")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        log.debug("http: " + format, *args)  # noqa: G003  # stdlib hands a printf template


class HealthServer:
    """Serves the registry and the probes until ``stop()``."""

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int) -> None:
        self.health = health
        self._metrics_app = make_wsgi_app(registry)
        self._server = make_server(host, port, self._app, server_class=_ThreadingServer,
                                   handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamer-http",
                                        daemon=True)

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()
        log.info("metrics and probes on port %d (/metrics /healthz /readyz)", self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _probe(self.health.live(), start_response)
        if path == "/readyz":
            return _probe(self.health.is_ready(), start_response)
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]


def _probe(state: tuple[bool, str], start_response: StartResponse) -> list[bytes]:
    ok, why = state
    start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
    return [why.encode() + b"\n"]
