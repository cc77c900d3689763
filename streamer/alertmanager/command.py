"""``streamer alertmanager``: the effective settings (config file, then flags) and the process."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from prometheus_client import start_http_server

from streamer.alertmanager.backoff import Backoff
from streamer.alertmanager.bridge import Bridge
from streamer.alertmanager.client import AlertmanagerClient
from streamer.alertmanager.delivery import Delivery, DeliveryAbandoned
from streamer.alertmanager.metrics import BridgeMetrics
from streamer.config import AlertmanagerConfig, Config, log_effective_config
from streamer.errors import ConfigError
from streamer.kafka.clients import ensure_topics, make_consumer

log = logging.getLogger(__name__)


def with_flags(config: AlertmanagerConfig, **flags: Any) -> AlertmanagerConfig:
    """``config`` with the command line's flags that were given (not None), validated again.

    Raises:
        ConfigError: A flag's value is invalid, or no URL is set at all.

    >>> with_flags(AlertmanagerConfig(), url="http://am:9093", group_id=None).url
    'http://am:9093'
    """
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        merged = msgspec.convert({**msgspec.to_builtins(config), **given}, AlertmanagerConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError("command line", "alertmanager", str(exc)) from None
    if merged.url is None:
        raise ConfigError("command line", "alertmanager.url", "set --url or alertmanager.url")
    return merged


async def serve(config: Config, settings: AlertmanagerConfig, stop: asyncio.Event) -> int:
    """Run the bridge until ``stop`` is set; the exit code."""
    if settings.url is None:
        raise ConfigError("command line", "alertmanager.url", "set --url or alertmanager.url")
    kafka = msgspec.structs.replace(config.kafka, group_id=settings.group_name(config.kafka.group_id),
                                    # The daemon's static member id must not be reused in another group.
                                    group_instance_id=None)
    log_effective_config(msgspec.structs.replace(config, kafka=kafka, alertmanager=settings))
    metrics = BridgeMetrics()
    server = None
    if settings.metrics_port is not None:
        server, _ = start_http_server(settings.metrics_port, addr=config.metrics.host,
                                      registry=metrics.registry)
    delivery = Delivery(AlertmanagerClient(settings.url, settings.timeout_s),
                        Backoff(settings.backoff_initial_s, settings.backoff_max_s), metrics, stop)
    await ensure_topics(kafka, [kafka.alert_topic])
    consumer = make_consumer(kafka, max_records=settings.max_batch)
    bridge = Bridge(consumer, delivery, settings, metrics, new_group_policy=kafka.auto_offset_reset)
    try:
        await consumer.start()
        consumer.subscribe([kafka.alert_topic], listener=bridge.listener())
        log.info("bridging %s as group %s to %s", kafka.alert_topic, kafka.group_id, settings.url)
        await bridge.run(stop)
    except DeliveryAbandoned as exc:
        log.info("%s; the next bridge in group %s posts them", exc, kafka.group_id)
    finally:
        await consumer.stop()
        if server is not None:
            server.shutdown()
    return 0
