"""One chaos run, start to verdict (the scenario is described in :mod:`streamer.lab.chaos`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import random
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from streamer.config import Config
from streamer.embedded_broker import EmbeddedBroker
from streamer.kafka.clients import ensure_state_topic, ensure_topics, make_producer
from streamer.lab.chaos.daemons import DaemonPool
from streamer.lab.chaos.evidence import (
    alerts_of,
    committed_offsets,
    dead_letters_of,
    read_topic,
    wait_committed,
)
from streamer.lab.chaos.plan import ChaosPlan, Fault, schedule
from streamer.lab.chaos.reference import reference_run
from streamer.lab.chaos.traffic import Production, Traffic, produce
from streamer.lab.chaos.verdict import Evidence, ProducedRecord, judge

log = logging.getLogger(__name__)

# An alert opened this many readings after an anomaly's last reading still counts
# for it (as in `streamer demo`).
GRACE_READINGS = 20


def chaos_config(config: Config, bootstrap: str, plan: ChaosPlan) -> Config:
    """The daemons' configuration: ``config`` with this run's broker, names, partitions and timings."""
    run = uuid.uuid4().hex[:8]
    kafka = msgspec.structs.replace(
        config.kafka,
        bootstrap_servers=bootstrap,
        group_id=f"chaos-{run}",
        input_topic=f"chaos-{run}-readings",
        alert_topic=f"chaos-{run}-alerts",
        dead_letter_topic=f"chaos-{run}-dlq",
        feedback_topic=f"chaos-{run}-feedback",
        state_topic=None,
        group_instance_id=None,
        create_topics=True,
        topic_partitions=plan.partitions,
        # Tansu 0.6 rejects the InitProducerId request idempotence needs; acks=all still holds.
        idempotent_producer=False,
        session_timeout_ms=plan.session_timeout_ms,
        heartbeat_interval_ms=max(100, plan.session_timeout_ms // 6),
        security=msgspec.structs.replace(config.kafka.security, protocol="PLAINTEXT", sasl_mechanism=None,
                                         sasl_username=None, sasl_password=None, sasl_password_file=None),
    )
    return msgspec.structs.replace(
        config, kafka=kafka,
        # state.enabled stays as configured: without snapshots, moved devices warm up
        # again and the verdict shows what that costs.
        state=msgspec.structs.replace(config.state, snapshot_interval_s=plan.snapshot_interval_s),
        metrics=msgspec.structs.replace(config.metrics, enabled=True, host="127.0.0.1",
                                        refresh_interval_s=1.0),
    )


async def run_chaos(config: Config, plan: ChaosPlan, workdir: Path) -> dict[str, Any]:
    """Run the scenario on a fresh embedded broker and return the verdict with its counts."""
    started = time.monotonic()
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=workdir / "tansu.log")
    bootstrap = broker.start()
    pool: DaemonPool | None = None
    try:
        cfg = chaos_config(config, bootstrap, plan)
        kafka = cfg.kafka
        await ensure_topics(kafka, [kafka.input_topic, kafka.alert_topic, kafka.dead_letter_topic])
        await ensure_state_topic(kafka, kafka.state_topic_name(), plan.partitions)
        traffic = Traffic(plan, cfg.readings.channels)
        pool = DaemonPool(cfg, plan.daemons, workdir, restart_delay_s=plan.restart_delay_s,
                          rng=random.Random(plan.seed))
        pool.start()
        await pool.wait_ready(plan.start_timeout_s)
        log.info("%d daemons ready after %.1fs; producing for %.0fs", plan.daemons,
                 time.monotonic() - started, plan.duration_s)
        production, faults = await _produce_under_faults(cfg, plan, traffic, pool, broker)
        await pool.settle()
        ends = _ends(production.records)
        drained = await wait_committed(kafka, kafka.input_topic, ends, plan.drain_timeout_s)
        await pool.stop()
        result = await _verify(cfg, plan, traffic, production, pool)
        return {
            **result,
            **faults,
            "drained": drained,
            "steps": production.steps,
            "late_steps": production.late_steps,
            "daemons": plan.daemons,
            "devices": plan.devices,
            "partitions": plan.partitions,
            "rate_hz": plan.rate_hz,
            "production_s": plan.duration_s,
            "seed": plan.seed,
            "exits": pool.exits(),
            "workdir": str(workdir),
            "machine": f"{platform.machine()} {platform.system()} python {platform.python_version()}",
            "duration_s": round(time.monotonic() - started, 1),
        }
    finally:
        if pool is not None:
            pool.kill_all()
        broker.stop()


async def _produce_under_faults(config: Config, plan: ChaosPlan, traffic: Traffic, pool: DaemonPool,
                                broker: EmbeddedBroker) -> tuple[Production, dict[str, Any]]:
    producer = make_producer(config.kafka)
    await producer.start()
    production = Production()
    done: dict[str, Any] = {"kills": 0, "terms": 0, "outages": 0, "outage_s": 0.0, "faults": []}
    try:
        producing = asyncio.create_task(produce(producer, config.kafka.input_topic, traffic, production),
                                        name="chaos-producer")
        injecting = asyncio.create_task(_inject(schedule(plan), pool, broker, done), name="chaos-faults")
        try:
            await producing
            await injecting  # faults all start before the producer ends (plan.TAIL_FRACTION)
        finally:
            broker.resume()  # never leave the broker frozen
            injecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await injecting
    finally:
        await producer.stop()
    return production, done


async def _inject(faults: list[Fault], pool: DaemonPool, broker: EmbeddedBroker,
                  done: dict[str, Any]) -> None:
    start = time.monotonic()
    for fault in faults:
        delay = start + fault.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        at = round(time.monotonic() - start, 1)
        if fault.kind in ("kill", "burst"):
            killed = await pool.kill(2 if fault.kind == "burst" else 1)
            done["kills"] += killed
            done["faults"].append({"at_s": at, "kind": fault.kind, "daemons": killed})
        elif fault.kind == "term":
            done["terms"] += await pool.terminate()
            done["faults"].append({"at_s": at, "kind": "term"})
        else:
            log.info("broker outage: SIGSTOP for %.1fs", fault.duration_s)
            broker.pause()
            try:
                await asyncio.sleep(fault.duration_s)
            finally:
                broker.resume()
            done["outages"] += 1
            done["outage_s"] = round(done["outage_s"] + fault.duration_s, 1)
            done["faults"].append({"at_s": at, "kind": "outage", "seconds": fault.duration_s})


def _ends(records: list[ProducedRecord]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


async def _verify(config: Config, plan: ChaosPlan, traffic: Traffic, production: Production,
                  pool: DaemonPool) -> dict[str, Any]:
    kafka = config.kafka
    partitions = plan.partitions
    committed = await committed_offsets(kafka, kafka.input_topic, partitions)
    inputs = await read_topic(kafka, kafka.input_topic, partitions)
    alerts = alerts_of(await read_topic(kafka, kafka.alert_topic, partitions))
    letters = dead_letters_of(await read_topic(kafka, kafka.dead_letter_topic, partitions), kafka.input_topic)
    reference = reference_run(config, inputs)
    evidence = Evidence(
        produced=production.records,
        committed=committed,
        dead_letters=letters,
        alerts=alerts,
        replay_causes={"sigkill": sum(1 for i in pool.history if i.ending == "sigkill"),
                       "unclean_exit": pool.unclean_exits(),
                       "replay_event": pool.replay_events()},
        input_mismatches=_mismatches(production.records, inputs),
    )
    judgement = judge(evidence, reference, traffic.truth, grace_ms=GRACE_READINGS * traffic.interval_ms)
    return {**judgement.as_json(), "committed": committed,
            "input_records": sum(len(records) for records in inputs.values())}


def _mismatches(produced: list[ProducedRecord], inputs: dict[int, list[Any]]) -> int:
    """Produced positions the input topic does not hold (a broker that lost an acknowledged write)."""
    held = {(p, r.offset) for p, records in inputs.items() for r in records}
    return sum(1 for r in produced if (r.partition, r.offset) not in held)
