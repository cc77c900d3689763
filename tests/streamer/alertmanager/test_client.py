"""The HTTP client against a local server that answers what each test scripts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streamer.alertmanager.client import AlertmanagerClient, AlertmanagerUnavailable
from streamer.embedded_broker import free_port


class Server:
    def __init__(self) -> None:
        self.status = 200
        self.bodies: list[Any] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                outer.paths.append(self.path)
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                body = b"" if outer.status == 200 else b'"at least one label pair required"'
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # http.server's name
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    thread = threading.Thread(target=running.httpd.serve_forever, daemon=True)
    thread.start()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()


async def test_alerts_are_posted_as_one_json_list_to_the_v2_path(server: Server) -> None:
    result = await AlertmanagerClient(server.url, 5).post([{"labels": {"a": "1"}}, {"labels": {"a": "2"}}])
    assert result.accepted
    assert server.paths == ["/api/v2/alerts"]
    assert server.bodies == [[{"labels": {"a": "1"}}, {"labels": {"a": "2"}}]]


async def test_a_4xx_is_a_final_refusal_with_its_reason(server: Server) -> None:
    server.status = 400
    result = await AlertmanagerClient(server.url, 5).post([{"labels": {}}])
    assert (result.accepted, result.status) == (False, 400)
    assert "label pair" in result.detail


@pytest.mark.parametrize("status", [500, 503, 429, 408])
async def test_5xx_and_throttling_ask_for_a_retry(server: Server, status: int) -> None:
    server.status = status
    with pytest.raises(AlertmanagerUnavailable) as raised:
        await AlertmanagerClient(server.url, 5).post([{"labels": {"a": "1"}}])
    assert raised.value.reason == "server_error"
    assert raised.value.retriable


async def test_nobody_listening_is_unreachable() -> None:
    with pytest.raises(AlertmanagerUnavailable) as raised:
        await AlertmanagerClient(f"http://127.0.0.1:{free_port()}", 2).post([{"labels": {"a": "1"}}])
    assert raised.value.reason == "unreachable"


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http"):
        AlertmanagerClient("file:///etc/passwd", 1)
