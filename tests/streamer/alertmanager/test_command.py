"""The bridge's settings: the config section validated at load, flags over it, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.alertmanager.command import with_flags
from streamer.cli import main
from streamer.config import AlertmanagerConfig, load_config
from streamer.errors import ConfigError


def test_defaults() -> None:
    config = load_config(None, environ={}).alertmanager
    assert config == AlertmanagerConfig()
    assert config.url is None
    assert config.group_name("streamer") == "streamer-alertmanager"
    assert (config.severity_critical, config.severity_warning) == (0.99, 0.9)


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("url: ftp://am", "alertmanager", "url must start with http:// or https://"),
    ("resend_interval_s: -5", "alertmanager.resend_interval_s", "Expected `float` > 0.0, got -5"),
    ("severity_warning: 0.995", "alertmanager", "severity_warning must not exceed severity_critical"),
    ("backoff_initial_s: 60", "alertmanager", "backoff_initial_s must not exceed backoff_max_s"),
    ("dashboard_url: 'https://g/{host}'", "alertmanager", "unknown placeholder {host}"),
    ("group_id: ' '", "alertmanager", "group_id must not be empty"),
    ("severity: high", "alertmanager.severity", "unknown key"),
])
def test_invalid_values_fail_at_load_naming_file_and_key(tmp_path: Path, text: str, key: str,
                                                         reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("alertmanager:\n  " + text + "\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert str(raised.value).startswith(f"{path}: {key}: ")
    assert reason in str(raised.value)


def test_the_environment_sets_the_section_too() -> None:
    config = load_config(None, environ={"STREAMER__ALERTMANAGER__URL": "http://am:9093",
                                        "STREAMER__ALERTMANAGER__GROUP_ID": "pager"})
    assert config.alertmanager.url == "http://am:9093"
    assert config.alertmanager.group_name("streamer") == "pager"


def test_flags_override_the_file_and_are_validated() -> None:
    base = AlertmanagerConfig(url="http://file:9093", resend_interval_s=30.0)
    merged = with_flags(base, url="http://flag:9093", resend_interval_s=None, dashboard_url="https://g/{device}")
    assert (merged.url, merged.resend_interval_s, merged.dashboard_url) == (
        "http://flag:9093", 30.0, "https://g/{device}")
    with pytest.raises(ConfigError, match="resend_interval_s"):
        with_flags(base, resend_interval_s=-1.0)
    with pytest.raises(ConfigError, match="url must start with http"):
        with_flags(base, url="am:9093")


def test_without_a_url_the_command_stops_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    # A configuration error: exit code 2 and one line, like every other.
    assert main(["alertmanager"]) == 2
    assert capsys.readouterr().err.strip() == (
        "streamer: command line: alertmanager.url: set --url or alertmanager.url")
