"""The application: the logged configuration hides secrets; runtime.scoring picks where batches are scored."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamer.config import MASK, load_config
from streamer.embedded_broker import free_port
from streamer.metrics import Metrics
from streamer.runtime.application import Application
from tests.fakes import offline_config


async def test_start_up_log_masks_the_sasl_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "predictor:\n  kind: baseline\nmetrics:\n  enabled: false\n"
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{free_port()}\n  request_timeout_ms: 2000\n"
        "  security:\n    protocol: SASL_PLAINTEXT\n    sasl_mechanism: PLAIN\n    sasl_username: svc\n",
        encoding="utf-8")
    loaded = load_config(path, environ={"STREAMER__KAFKA__SECURITY__SASL_PASSWORD": "hunter2-secret"})
    with caplog.at_level(logging.DEBUG):
        exit_code = await Application(loaded, metrics=Metrics()).run()  # nothing listens: fails at start
    assert exit_code == 1
    effective = [r.getMessage() for r in caplog.records if "effective configuration" in r.getMessage()]
    assert len(effective) == 1
    assert f'"sasl_password":"{MASK}"' in effective[0]
    assert '"sasl_username":"svc"' in effective[0]
    assert "hunter2-secret" not in caplog.text


@pytest.mark.parametrize(("scoring", "inline"), [("event_loop", True), ("thread", False)])
def test_runtime_scoring_chooses_the_event_loop_or_the_scoring_thread(scoring: str, inline: bool) -> None:
    application = Application(offline_config(runtime={"scoring": scoring}))
    assert application.scorer.inline is inline
    application.scorer.shutdown()
