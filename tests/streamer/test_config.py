import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from streamer.config import (
    MASK,
    Config,
    SecurityConfig,
    env_overrides,
    load_config,
    log_effective_config,
    masked,
    write_config_file,
)
from streamer.errors import ConfigError, StreamerError

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_without_file_or_environment() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.thresholds.zscore.window == 200
    assert config.batching.max_batch == 4096
    assert config.readings.channels == ["value"]
    assert config.kafka.security.protocol == "PLAINTEXT"


def test_yaml_file_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    text = "thresholds:\n  zscore:\n    window: 300\n    z: 4.5\nkafka:\n  input_topic: sensors\n"
    path = write(tmp_path, text)
    config = load_config(path, environ={})
    assert config.thresholds.zscore.window == 300
    assert config.thresholds.zscore.z == 4.5
    assert config.kafka.input_topic == "sensors"
    assert config.thresholds.warmup == Config().thresholds.warmup
    assert config.kafka.alert_topic == "alerts"


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ={}) == Config()


def test_env_override_parses_yaml_scalars() -> None:
    config = load_config(
        None,
        environ={
            "STREAMER__BATCHING__MAX_BATCH": "512",
            "STREAMER__READINGS__CHANNELS": "[temp, vibration]",
            "STREAMER__METRICS__ENABLED": "false",
            "HOME": "/root",
        },
    )
    assert config.batching.max_batch == 512
    assert config.readings.channels == ["temp", "vibration"]
    assert config.metrics.enabled is False


def test_env_override_names_are_case_insensitive() -> None:
    config = load_config(None, environ={"streamer__batching__queue_size": "3"})
    assert config.batching.queue_size == 3


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "batching:\n  max_batch: 100\n  queue_size: 7\n")
    config = load_config(path, environ={"STREAMER__BATCHING__MAX_BATCH": "200"})
    assert config.batching.max_batch == 200  # env wins
    assert config.batching.queue_size == 7  # file value kept where env is silent


def test_env_overrides_collects_only_prefixed_variables() -> None:
    assert env_overrides({"STREAMER__KAFKA__SECURITY__PROTOCOL": "SSL", "PATH": "/bin"}) == {
        ("kafka", "security", "protocol"): "SSL"
    }


def test_secret_from_env_stays_a_string_even_when_numeric() -> None:
    overrides = env_overrides({"STREAMER__KAFKA__SECURITY__SASL_PASSWORD": "012345"})
    assert overrides == {("kafka", "security", "sasl_password"): "012345"}


def test_invalid_file_value_names_file_key_path_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "thresholds:\n  zscore:\n    window: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: thresholds.zscore.window: ")
    assert "4" in message.removeprefix(f"{path}: thresholds.zscore.window: ")
    assert info.value.source == str(path)
    assert info.value.key_path == "thresholds.zscore.window"
    assert isinstance(info.value, StreamerError)


def test_wrong_type_error_names_the_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, "buffers:\n  window: sixty-four\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}: buffers.window: ")
    assert "sixty-four" in str(info.value)


def test_invalid_literal_names_the_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, "runtime:\n  log_level: TRACE\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}: runtime.log_level: ")
    assert "TRACE" in str(info.value)


def test_unknown_key_is_rejected_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "thresholds:\n  windw: 300\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}: thresholds")
    assert "windw" in str(info.value)


def test_unknown_key_in_file_is_not_blamed_on_an_unrelated_env_override(tmp_path: Path) -> None:
    # The typo is in the file; the environment only sets a valid sibling key.
    path = write(tmp_path, "thresholds:\n  windw: 300\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"STREAMER__THRESHOLDS__ZSCORE__Z": "4"})
    assert info.value.source == str(path)
    assert "windw" in str(info.value)


def test_env_caused_error_names_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "thresholds:\n  zscore:\n    z: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"STREAMER__THRESHOLDS__ZSCORE__WINDOW": "3"})
    assert str(info.value).startswith("environment: thresholds.zscore.window: ")
    assert "3" in info.value.reason


def test_env_caused_cross_section_error_names_environment() -> None:
    # The built-in defaults are valid; only the override makes initial_devices > max_devices.
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"STREAMER__BUFFERS__MAX_DEVICES": "10"})
    assert "initial_devices" in str(info.value)
    assert info.value.source == "environment"


def test_unreadable_file_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, environ={})
    assert str(info.value).startswith(str(missing))


@pytest.mark.parametrize("text", ["- a\n- b\n", "thresholds: [\n"])
def test_non_mapping_or_broken_yaml_is_rejected(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.source == str(path)


def test_sasl_without_username_fails(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kafka:\n  security:\n    protocol: SASL_SSL\n    sasl_mechanism: PLAIN\n    sasl_password: x\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key_path == "kafka.security"
    assert "sasl_username" in str(info.value)


def test_cross_field_check_runs_on_load(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  session_timeout_ms: 1000\n  heartbeat_interval_ms: 1000\n")
    with pytest.raises(ConfigError, match="heartbeat_interval_ms"):
        load_config(path, environ={})


def sasl_config(tmp_path: Path) -> Config:
    path = write(
        tmp_path,
        "kafka:\n  security:\n    protocol: SASL_SSL\n    sasl_mechanism: SCRAM-SHA-512\n"
        "    sasl_username: svc\n",
    )
    return load_config(path, environ={"STREAMER__KAFKA__SECURITY__SASL_PASSWORD": "hunter2"})


def test_masked_hides_secrets_but_keeps_other_values(tmp_path: Path) -> None:
    config = sasl_config(tmp_path)
    assert config.kafka.security.password() == "hunter2"
    shown = masked(config)
    assert shown["kafka"]["security"]["sasl_password"] == MASK
    assert shown["kafka"]["security"]["sasl_username"] == "svc"
    assert "hunter2" not in repr(shown)
    # masking works on a copy: the config itself still holds the secret, which never prints
    secret = config.kafka.security.sasl_password
    assert secret is not None and secret.reveal() == "hunter2"  # a test value
    assert "hunter2" not in repr(config) and "hunter2" not in f"{config}" and "hunter2" not in str(secret)


def test_a_malformed_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    text = ("kafka:\n  security:\n    protocol: SASL_SSL\n    sasl_mechanism: PLAIN\n    sasl_username: svc\n"
            "    sasl_password: 918273\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key_path == "kafka.security.sasl_password"
    assert "quote it" in info.value.reason
    assert "918273" not in str(info.value)


def test_a_child_process_config_file_holds_the_secret_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    config = sasl_config(tmp_path)
    path = write_config_file(config, tmp_path / "child.yaml")
    assert path.stat().st_mode & 0o777 == 0o600
    reloaded = load_config(path, environ={})
    assert reloaded.kafka.security.password() == "hunter2"  # a test value
    assert reloaded == config


def test_log_effective_config_masks_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = sasl_config(tmp_path)
    with caplog.at_level(logging.INFO, logger="streamer.config"):
        log_effective_config(config)
    assert "effective configuration" in caplog.text
    assert "SCRAM-SHA-512" in caplog.text
    assert MASK in caplog.text
    assert "hunter2" not in caplog.text


def test_password_is_read_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "password.txt"
    secret.write_text("s3cret\n", encoding="utf-8")
    security = SecurityConfig(
        protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password_file=str(secret),
    )
    assert security.password() == "s3cret"


def test_config_is_frozen() -> None:
    config = load_config(None, environ={})
    with pytest.raises(AttributeError):
        config.thresholds.zscore.z = 1.0  # type: ignore[misc]
    changed = msgspec.structs.replace(config.thresholds.zscore, z=1.0)
    assert changed.z == 1.0
    assert config.thresholds.zscore.z == 5.0


def test_repository_config_yaml_matches_built_in_defaults() -> None:
    documented = REPO_ROOT / "config.yaml"
    assert documented.is_file(), f"{documented} should document the defaults"
    assert load_config(documented, environ={}) == load_config(None, environ={})


def test_repository_config_yaml_names_every_built_in_key() -> None:
    # Equal values alone would let config.yaml leave a key out (the default fills it).
    def key_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
        paths: set[str] = set()
        for name, value in tree.items():
            paths |= key_paths(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name}
        return paths

    documented = yaml.safe_load((REPO_ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert key_paths(documented) == key_paths(msgspec.to_builtins(Config()))


def test_pause_marks_default_to_half_the_queue_and_half_again() -> None:
    config = load_config(None, environ={"STREAMER__BATCHING__MAX_BATCH": "100",
                                        "STREAMER__BATCHING__QUEUE_SIZE": "8"})
    assert config.batching.pause_marks() == (400, 200)


@pytest.mark.parametrize(("text", "reason"), [
    ("batching:\n  pause_high: 100\n  pause_low: 100\n", "pause_low must be below pause_high (100), got 100"),
    ("batching:\n  max_batch: 10\n  queue_size: 4\n  pause_high: 41\n",
     "pause_high must be at most queue_size * max_batch (40), got 41"),
])
def test_pause_marks_out_of_order_fail_at_load(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key_path == "batching"
    assert reason in info.value.reason


def test_liveness_timeouts_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "kafka:\n  unreachable_timeout_s: 0\n"), environ={})
    assert info.value.key_path == "kafka.unreachable_timeout_s"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "runtime:\n  commit_stall_timeout_s: -1\n"), environ={})
    assert info.value.key_path == "runtime.commit_stall_timeout_s"


@pytest.mark.parametrize(
    ("scoring", "kind", "backend", "on_thread"),
    [
        ("auto", "lstm", "numpy", False),
        ("auto", "baseline", "numpy", False),
        ("auto", "lstm", "tensorflow", True),
        ("auto", "lstm", "keras", True),
        ("thread", "lstm", "numpy", True),
        ("event_loop", "lstm", "keras", False),
    ],
)
def test_scoring_runs_on_a_thread_only_for_backends_that_release_the_gil(
    scoring: str, kind: str, backend: str, on_thread: bool,
) -> None:
    config = load_config(environ={
        "STREAMER__RUNTIME__SCORING": scoring,
        "STREAMER__PREDICTOR__KIND": kind,
        "STREAMER__PREDICTOR__LSTM__BACKEND": backend,
    })
    assert config.runtime.scores_on_thread(config.predictor) is on_thread


def test_quiet_periods_load_and_must_not_be_negative(tmp_path: Path) -> None:
    text = "thresholds:\n  range_novelty:\n    quiet_period: 20\n  likelihood:\n    quiet_period: 1000\n"
    config = load_config(write(tmp_path, text), environ={})
    assert config.thresholds.range_novelty.quiet_period == 20
    assert config.thresholds.likelihood.quiet_period == 1000
    assert Config().thresholds.range_novelty.quiet_period == 0  # off unless asked for
    assert Config().thresholds.likelihood.quiet_period == 0
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "thresholds:\n  range_novelty:\n    quiet_period: -1\n"), environ={})
    assert info.value.key_path == "thresholds.range_novelty.quiet_period"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "thresholds:\n  likelihood:\n    quiet_period: -5\n"), environ={})
    assert info.value.key_path == "thresholds.likelihood.quiet_period"


def test_max_unacked_batches_is_at_least_one(tmp_path: Path) -> None:
    assert Config().batching.max_unacked_batches == 4
    config = load_config(write(tmp_path, "batching:\n  max_unacked_batches: 1\n"), environ={})
    assert config.batching.max_unacked_batches == 1
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "batching:\n  max_unacked_batches: 0\n"), environ={})
    assert info.value.key_path == "batching.max_unacked_batches"


def test_pattern_context_loads_and_is_off_by_default(tmp_path: Path) -> None:
    text = "thresholds:\n  likelihood:\n    pattern_context_span: 175\n    pattern_context_buckets: 2\n"
    config = load_config(write(tmp_path, text), environ={})
    assert config.thresholds.likelihood.pattern_context_span == 175
    assert config.thresholds.likelihood.pattern_context_buckets == 2
    assert Config().thresholds.likelihood.pattern_context_span is None
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "thresholds:\n  likelihood:\n    pattern_context_span: 0\n"), environ={})
    assert info.value.key_path == "thresholds.likelihood.pattern_context_span"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "thresholds:\n  likelihood:\n    pattern_context_buckets: 0\n"),
                    environ={})
    assert info.value.key_path == "thresholds.likelihood.pattern_context_buckets"


def test_stuck_section_loads_from_file_and_environment(tmp_path: Path) -> None:
    text = "thresholds:\n  stuck:\n    min_run: 50\n    factor: 3\n    tolerance: 0.001\n"
    config = load_config(write(tmp_path, text), environ={"STREAMER__THRESHOLDS__STUCK__ENABLED": "false"})
    stuck = config.thresholds.stuck
    assert (stuck.enabled, stuck.min_run, stuck.factor, stuck.tolerance) == (False, 50, 3.0, 0.001)
    assert stuck.min_readings == Config().thresholds.stuck.min_readings


@pytest.mark.parametrize(("key", "value"), [
    ("min_run", "0"), ("factor", "0.5"), ("tolerance", "1.0"), ("tolerance", "-0.1"), ("min_readings", "-1"),
    ("enabled", "sometimes"), ("min_runs", "20"),
])
def test_invalid_stuck_settings_fail_at_load_naming_the_key(tmp_path: Path, key: str, value: str) -> None:
    path = write(tmp_path, f"thresholds:\n  stuck:\n    {key}: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key_path == f"thresholds.stuck.{key}"
    assert str(info.value).startswith(f"{path}: thresholds.stuck.{key}: ")


@pytest.mark.parametrize(("old", "new"), [
    ("z", "thresholds.zscore.z"), ("window", "thresholds.zscore.window"),
    ("range_margin", "thresholds.range_novelty.margin"),
    ("range_quiet_period", "thresholds.range_novelty.quiet_period"),
])
def test_a_key_that_moved_into_a_subsection_is_an_error_that_says_where_it_went(
    tmp_path: Path, old: str, new: str,
) -> None:
    path = write(tmp_path, f"thresholds:\n  {old}: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.source == str(path)
    assert info.value.key_path == f"thresholds.{old}"
    assert new in info.value.reason
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={f"STREAMER__THRESHOLDS__{old.upper()}": "3"})
    assert info.value.source == "environment"
