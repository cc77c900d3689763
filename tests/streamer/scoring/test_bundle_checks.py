"""Whether a bundle may replace the running model: channels, recorded validation, parity."""

from pathlib import Path

from models.bundle import ModelBundle, default_bundle_path, load_bundle
from streamer.scoring.bundle_checks import Refusal, check_bundle, load_checked
from tests.bundle_variants import bundle_variant


def test_checks_refuse_other_channels_missing_validation_and_failed_parity(tmp_path: Path) -> None:
    channels = ["value"]
    assert check_bundle(load_bundle(default_bundle_path()), channels) is None  # no parity record: finite only
    assert check_bundle(load_bundle(default_bundle_path()), ["a", "b"]) == Refusal(
        "channels", "bundle channels ['value'] differ from readings.channels ['a', 'b']")
    bundle_variant(tmp_path / "good", 5, parity="true")
    good = load_checked(tmp_path / "good", channels)
    assert isinstance(good, ModelBundle) and good.version == load_bundle(tmp_path / "good").version
    bundle_variant(tmp_path / "parity", 6, parity="false")
    refused = load_checked(tmp_path / "parity", channels)
    assert isinstance(refused, Refusal) and refused.reason == "parity"
    bundle_variant(tmp_path / "validation", 7, validation={"mse": float("nan")})
    refused = load_checked(tmp_path / "validation", channels)
    assert isinstance(refused, Refusal) and refused.reason == "validation"
    refused = load_checked(tmp_path / "missing", channels)
    assert isinstance(refused, Refusal) and refused.reason == "unreadable"
