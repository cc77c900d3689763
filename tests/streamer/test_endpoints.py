import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from streamer.endpoints import Health, HealthServer


def test_health_starts_live_but_not_ready() -> None:
    health = Health()
    assert health.live() == (True, "ok")
    assert health.is_ready() == (False, "not consuming")
    health.ready = True
    assert health.is_ready() == (True, "ok")


def test_fatal_error_makes_not_live_and_not_ready() -> None:
    health = Health(ready=True)
    health.fatal = "broker lost"
    live, why = health.live()
    assert not live and "broker lost" in why
    assert health.is_ready() == (False, why)


def test_stalled_event_loop_fails_liveness() -> None:
    health = Health(stall_after_s=30.0, ready=True)
    health.last_beat = time.monotonic() - 20.0
    assert health.live() == (True, "ok")
    health.last_beat = time.monotonic() - 40.0
    live, why = health.live()
    assert not live and "stalled" in why
    assert health.is_ready()[0] is False
    health.beat()  # the loop recovers
    assert health.live() == (True, "ok")
    assert health.is_ready() == (True, "ok")


def test_brokers_silent_too_long_fail_liveness_until_they_answer() -> None:
    health = Health(unreachable_after_s=60.0, ready=True)
    health.last_contact = time.monotonic() - 50.0
    assert health.live() == (True, "ok")
    health.last_contact = time.monotonic() - 70.0
    live, why = health.live()
    assert not live and "brokers unreachable" in why
    assert health.is_ready()[0] is False
    health.contact()
    assert health.live() == (True, "ok")


def test_commits_stalled_too_long_fail_liveness_until_progress() -> None:
    health = Health(commit_stall_after_s=300.0)
    health.last_progress = time.monotonic() - 301.0
    live, why = health.live()
    assert not live and "no offset committed" in why
    health.progressed()
    assert health.live() == (True, "ok")


def test_checks_without_a_limit_never_fail() -> None:
    health = Health(last_contact=0.0, last_progress=0.0)
    assert health.live() == (True, "ok")


def test_old_last_beat_fails_liveness() -> None:
    health = Health(stall_after_s=5.0, last_beat=0.0)
    assert health.live()[0] is False


@pytest.fixture(scope="module")
def running_server() -> Iterator[HealthServer]:
    # One server for the module: stopping one waits out serve_forever's poll interval.
    registry = CollectorRegistry()
    Counter("unit_probe_requests", "A metric to find in the scrape.", registry=registry).inc()
    served = HealthServer(registry, Health(), "127.0.0.1", 0)
    served.start()
    yield served
    served.stop()


@pytest.fixture
def server(running_server: HealthServer) -> HealthServer:
    running_server.health = Health()  # the handler reads it per request
    return running_server


def fetch(server: HealthServer, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        body = error.read().decode()
        error.close()
        return error.code, body


def test_server_binds_a_free_port(server: HealthServer) -> None:
    assert server.port > 0


def test_metrics_endpoint(server: HealthServer) -> None:
    status, body = fetch(server, "/metrics")
    assert status == 200
    assert "unit_probe_requests_total 1.0" in body


def test_healthz(server: HealthServer) -> None:
    assert fetch(server, "/healthz") == (200, "ok\n")
    server.health.fatal = "boom"
    status, body = fetch(server, "/healthz")
    assert status == 503 and "boom" in body


def test_readyz_follows_ready_flag(server: HealthServer) -> None:
    assert fetch(server, "/readyz") == (503, "not consuming\n")
    server.health.ready = True
    assert fetch(server, "/readyz") == (200, "ok\n")


def test_unknown_path_is_404(server: HealthServer) -> None:
    status, body = fetch(server, "/nope")
    assert status == 404
    assert "/metrics" in body


def test_stop_closes_the_port() -> None:
    served = HealthServer(CollectorRegistry(), Health(), "127.0.0.1", 0)
    served.start()
    assert fetch(served, "/healthz")[0] == 200
    served.stop()
    with pytest.raises(urllib.error.URLError):
        fetch(served, "/healthz")
