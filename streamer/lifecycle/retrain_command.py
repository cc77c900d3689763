"""``streamer retrain``: retraining with a gate, and promotion after a shadow period.

Exit codes: 0 a new candidate was registered (with ``--promote-after-shadow``:
the candidate was promoted); 3 the gate refused (the new bundle is not better
by ``retrain.min_improvement``, or the candidate is not promoted, or it is
still in its shadow period); 2 a configuration or input error (no registry,
an unusable current bundle, a missing input topic, too few usable readings);
1 the broker is unreachable. The JSON summary goes to stdout either way.

TensorFlow is imported only once there is something to train, inside
:func:`streamer.lifecycle.retrain.retrain`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from streamer.config import Config
from streamer.errors import ConfigError

log = logging.getLogger(__name__)

REGISTRY_KEY = "predictor.lstm.registry"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``streamer retrain`` to the command parser."""
    parser = sub.add_parser(
        "retrain", parents=[common], help="train a new bundle on recent readings; register it if better",
        description="Train a new forecaster on the most recent readings of kafka.input_topic, leaving out "
                    "alert episodes and anomalies operators confirmed or reported missed; score it and the "
                    "registry's current bundle on a held-out recent slice; register it as candidate only if "
                    "its error is lower by retrain.min_improvement. Prints a JSON summary. Exit codes: 0 "
                    "registered (or promoted), 3 refused by the gate, 2 configuration or input error, "
                    "1 broker unreachable.")
    parser.add_argument("--promote-after-shadow", action="store_true",
                        help="only check the candidate's shadow period (retrain.shadow_period_s, "
                             "max_alert_increase) and promote it if it passed; train nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the new bundle to this directory, whatever the gate decides")
    parser.add_argument("--bootstrap-servers", default=None, help="override kafka.bootstrap_servers")
    parser.set_defaults(command="retrain", handler=command)


def command(args: argparse.Namespace, config: Config) -> int:
    """Run ``streamer retrain`` (see the module docstring); prints the summary."""
    import msgspec

    from models.registry import BundleRegistry

    if args.bootstrap_servers:
        config = msgspec.structs.replace(
            config, kafka=msgspec.structs.replace(config.kafka, bootstrap_servers=args.bootstrap_servers))
    if config.predictor.lstm.registry is None:
        raise ConfigError("<config>", REGISTRY_KEY, "streamer retrain needs a bundle registry directory")
    registry = BundleRegistry(config.predictor.lstm.registry)
    summary: dict[str, Any] = {"registry": str(registry.root)}
    if args.promote_after_shadow or config.retrain.auto_promote:
        code, promotion = asyncio.run(promote_after_shadow(config, registry))
        summary["promotion"] = promotion
        if args.promote_after_shadow:
            return _finish(code, summary)
        if promotion["decision"] == "in_shadow":
            # One candidate at a time gets its whole shadow period; a new one would restart it.
            summary["decision"] = "candidate_in_shadow"
            return _finish(code, summary)
    return _retrain(args, config, registry, summary)


def _retrain(args: argparse.Namespace, config: Config, registry: Any, summary: dict[str, Any]) -> int:
    from models.bundle import BundleError, load_bundle
    from models.registry import RegistryError
    from streamer.lifecycle.retrain import BAD_INPUT, gather, retrain
    from streamer.lifecycle.topics import MissingTopicError

    try:
        current = registry.load("current")
        if current is None:
            # An empty registry: the bundle the daemon runs without one is the one to beat.
            current = load_bundle(config.predictor.lstm.bundle)
    except (BundleError, RegistryError) as exc:
        raise ConfigError("<config>", REGISTRY_KEY, f"{registry.root}: current: {exc}") from None
    if list(current.metadata.channels) != list(config.readings.channels):
        raise ConfigError("<config>", REGISTRY_KEY,
                          f"current bundle {current.version} has channels {list(current.metadata.channels)}, "
                          f"readings.channels is {list(config.readings.channels)}")
    try:
        gathered = asyncio.run(gather(config))
    except MissingTopicError as exc:
        log.error("cannot retrain: %s", exc)  # noqa: TRY400  # the message says what is missing
        return _finish(BAD_INPUT, {**summary, "decision": "no_input", "reason": str(exc)})
    outcome = retrain(config, gathered, current, registry=registry, out=args.out)
    return _finish(outcome.exit_code, {**summary, **outcome.summary})


async def promote_after_shadow(config: Config, registry: Any, *, now_ms: int | None = None
                               ) -> tuple[int, dict[str, Any]]:
    """Promote the candidate if it passed its shadow period; returns the exit code and a summary."""
    from streamer.lifecycle.exclusions import episodes, verdicts
    from streamer.lifecycle.promotion import decide, evidence, shadow_since_ms
    from streamer.lifecycle.retrain import NOT_BETTER, REGISTERED, decode_alerts, decode_feedback
    from streamer.lifecycle.topics import recent_records_or_none

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    settings = config.retrain
    candidate, current = registry.pointer("candidate"), registry.pointer("current")
    summary: dict[str, Any] = {"candidate": candidate, "current": current}
    if candidate is None or current is None:
        return NOT_BETTER, {**summary, "decision": "nothing_to_promote",
                            "reason": "no candidate" if candidate is None else "no current to compare with"}
    since = shadow_since_ms(registry.history(), candidate)
    if since is None:
        return NOT_BETTER, {**summary, "decision": "not_promoted",
                            "reason": "the history does not say when it became candidate"}
    age_s = (now_ms - since) / 1000
    summary["shadow_s"] = age_s
    if age_s < settings.shadow_period_s:
        return NOT_BETTER, {**summary, "decision": "in_shadow",
                            "reason": f"candidate for {age_s:.0f} s of retrain.shadow_period_s "
                                      f"{settings.shadow_period_s:.0f} s"}
    kafka, bound = config.kafka, settings.max_readings_per_partition
    live = decode_alerts(await recent_records_or_none(kafka, kafka.alert_topic, per_partition=bound))
    shadow = decode_alerts(await recent_records_or_none(kafka, kafka.shadow_alert_topic, per_partition=bound))
    feedback = decode_feedback(await recent_records_or_none(kafka, kafka.feedback_topic, per_partition=bound),
                               config.readings.device_id_pattern)
    found = evidence([e for e in episodes(live) if e.model_version == current],
                     [e for e in episodes(shadow) if e.model_version == candidate],
                     verdicts(feedback), since_ms=since, now_ms=now_ms,
                     shadow_fraction=config.predictor.lstm.shadow.fraction)
    decision = decide(found, max_alert_increase=settings.max_alert_increase)
    summary.update({"evidence": found.to_json(), "reason": decision.reason})
    if not decision.promote:
        log.info("candidate %s not promoted: %s", candidate, decision.reason)
        return NOT_BETTER, {**summary, "decision": "not_promoted"}
    registry.promote(candidate, note=f"after shadow: {decision.reason}")
    log.info("promoted %s after its shadow period: %s", candidate, decision.reason)
    return REGISTERED, {**summary, "decision": "promoted"}


def _finish(code: int, summary: dict[str, Any]) -> int:
    summary["exit_code"] = code
    sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
    return code
