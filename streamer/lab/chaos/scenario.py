"""One chaos run, start to verdict (the scenario is described in :mod:`streamer.lab.chaos`)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import platform
import random
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from models.bundle import DEFAULT_BUNDLE, default_bundle_path
from models.registry import BundleRegistry
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
from streamer.lab.chaos.traffic import BASE_TS_MS, Production, Traffic, produce
from streamer.lab.chaos.verdict import Evidence, ProducedRecord, judge
from streamer.lab.variants import two_version_registry

log = logging.getLogger(__name__)

# An alert opened this many readings after an anomaly's last reading still counts
# for it (as in `streamer demo`).
GRACE_READINGS = 20
# How often the daemons' swap counters are read: a SIGKILLed daemon's last
# swaps since the last read are not counted, so the figure is a lower bound.
SWAP_COUNT_S = 1.0
# Reading the group's commits when the first swap is injected (the broker may be slow after an outage).
COMMITS_TIMEOUT_S = 10.0


class Swapper:
    """Alternates the registry's ``current`` between two versions: promote the other, then roll back."""

    def __init__(self, registry: BundleRegistry, first: str, second: str) -> None:
        self.registry = registry
        self.versions = (first, second)
        self.done = 0

    def swap(self) -> str:
        """Change ``current``; returns the version it points at now."""
        if self.done % 2 == 0:
            self.registry.promote(self.versions[1], note="streamer chaos: swap fault")
        else:
            self.registry.rollback(note="streamer chaos: swap fault")
        self.done += 1
        return self.registry.pointer("current") or ""


def chaos_config(config: Config, bootstrap: str, plan: ChaosPlan, registry: Path | None = None) -> Config:
    """The daemons' configuration: ``config`` with this run's broker, names, partitions and timings.

    With ``registry`` the daemons follow that bundle registry (runs with swaps).
    """
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
    predictor = config.predictor
    if registry is not None:
        predictor = msgspec.structs.replace(predictor, lstm=msgspec.structs.replace(
            predictor.lstm, registry=str(registry), poll_interval_s=plan.registry_poll_s))
    return msgspec.structs.replace(
        config, kafka=kafka, predictor=predictor,
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
        swapper = await asyncio.to_thread(_registry, config, plan, workdir)
        cfg = chaos_config(config, bootstrap, plan, swapper.registry.root if swapper else None)
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
        counting = asyncio.create_task(_count_swaps(pool), name="chaos-swap-count") if swapper else None
        production, faults = await _produce_under_faults(cfg, plan, traffic, pool, broker, swapper)
        await pool.settle()
        ends = _ends(production.records)
        drained = await wait_committed(kafka, kafka.input_topic, ends, plan.drain_timeout_s)
        if counting is not None:
            counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counting
            await pool.read_swaps()
        await pool.stop()
        swaps_from_ts = _swaps_from_ts(production, faults.pop("commits_at_first_swap", None), traffic)
        result = await _verify(cfg, plan, traffic, production, pool, swapper, swaps_from_ts)
        return {
            **result,
            **faults,
            **(_swap_report(swapper, pool, swaps_from_ts) if swapper else {}),
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


def _registry(config: Config, plan: ChaosPlan, workdir: Path) -> Swapper | None:
    """For runs with swaps: a registry with the configured bundle as current and a relabelled copy."""
    if not plan.swaps:
        return None
    lstm = config.predictor.lstm
    if config.predictor.kind != "lstm" or lstm.registry is not None:
        raise ValueError("chaos swaps need predictor.kind lstm and a bundle (the run makes its registry)")
    source = default_bundle_path() if lstm.bundle == DEFAULT_BUNDLE else Path(lstm.bundle)
    scratch = workdir / "bundles"
    scratch.mkdir(parents=True, exist_ok=True)
    first, second = two_version_registry(workdir / "registry", source, scratch)
    return Swapper(BundleRegistry(workdir / "registry"), first, second)


async def _count_swaps(pool: DaemonPool) -> None:
    while True:
        await pool.read_swaps()
        await asyncio.sleep(SWAP_COUNT_S)


async def _produce_under_faults(config: Config, plan: ChaosPlan, traffic: Traffic, pool: DaemonPool,
                                broker: EmbeddedBroker,
                                swapper: Swapper | None) -> tuple[Production, dict[str, Any]]:
    producer = make_producer(config.kafka)
    await producer.start()
    production = Production()
    done: dict[str, Any] = {"kills": 0, "terms": 0, "outages": 0, "outage_s": 0.0, "swaps": 0, "faults": []}
    try:
        producing = asyncio.create_task(produce(producer, config.kafka.input_topic, traffic, production),
                                        name="chaos-producer")
        injecting = asyncio.create_task(_inject(schedule(plan), pool, broker, done, swapper, config, plan),
                                        name="chaos-faults")
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


async def _inject(faults: list[Fault], pool: DaemonPool, broker: EmbeddedBroker, done: dict[str, Any],
                  swapper: Swapper | None, config: Config, plan: ChaosPlan) -> None:
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
        elif fault.kind == "swap":
            if swapper is None:
                raise ValueError("a swap fault needs the run's registry")
            if "commits_at_first_swap" not in done:
                # Readings below these offsets were scored, and committed, before any swap: no
                # replay goes below a commit, so their alerts come from the first model.
                done["commits_at_first_swap"] = await _commits(config, plan)
            version = await asyncio.to_thread(swapper.swap)
            log.info("model swap: registry current -> %s", version)
            done["swaps"] += 1
            done["faults"].append({"at_s": at, "kind": "swap", "current": version})
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


def _reference_config(config: Config, swapper: Swapper | None) -> Config:
    """The reference runs the first version all along (the daemons started on it)."""
    if swapper is None:
        return config
    lstm = msgspec.structs.replace(config.predictor.lstm, registry=None,
                                   bundle=str(swapper.registry.path_of(swapper.versions[0])))
    return msgspec.structs.replace(config, predictor=msgspec.structs.replace(config.predictor, lstm=lstm))


def _ends(records: list[ProducedRecord]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


async def _commits(config: Config, plan: ChaosPlan) -> dict[int, int | None]:
    """The group's committed offsets now (every partition None if the broker does not answer in time)."""
    kafka = config.kafka
    try:
        return await asyncio.wait_for(committed_offsets(kafka, kafka.input_topic, plan.partitions),
                                      COMMITS_TIMEOUT_S)
    except TimeoutError:
        return dict.fromkeys(range(plan.partitions))


def _swaps_from_ts(production: Production, commits: dict[int, int | None] | None,
                   traffic: Traffic) -> int | None:
    """The event time from which alerts may come from a swapped model (None: no swap was injected).

    The earliest event time, over partitions, of the first reading at or above
    the group's committed offset when the first swap was injected: every
    reading below it was scored before that swap, in every partition.
    """
    if commits is None:
        return None
    first_step = len(production.step_starts)
    for partition, committed in commits.items():
        if committed is None:
            return BASE_TS_MS
        index = next((i for i, r in enumerate(production.records)
                      if r.partition == partition and r.offset >= committed), None)
        if index is not None:
            first_step = min(first_step, bisect.bisect_right(production.step_starts, index) - 1)
    return BASE_TS_MS + first_step * traffic.interval_ms


def _swap_report(swapper: Swapper, pool: DaemonPool, swaps_from_ts: int | None) -> dict[str, Any]:
    return {"registry_versions": list(swapper.versions),
            "registry_current_at_end": swapper.registry.pointer("current"),
            # Read from each daemon's /metrics every SWAP_COUNT_S: a lower bound (see SWAP_COUNT_S).
            "model_swaps_seen": pool.model_swaps(),
            "swaps_from_ts": swaps_from_ts}


async def _verify(config: Config, plan: ChaosPlan, traffic: Traffic, production: Production,
                  pool: DaemonPool, swapper: Swapper | None, swaps_from_ts: int | None) -> dict[str, Any]:
    kafka = config.kafka
    partitions = plan.partitions
    committed = await committed_offsets(kafka, kafka.input_topic, partitions)
    inputs = await read_topic(kafka, kafka.input_topic, partitions)
    alerts = alerts_of(await read_topic(kafka, kafka.alert_topic, partitions))
    letters = dead_letters_of(await read_topic(kafka, kafka.dead_letter_topic, partitions), kafka.input_topic)
    reference = reference_run(_reference_config(config, swapper), inputs)
    evidence = Evidence(
        produced=production.records,
        committed=committed,
        dead_letters=letters,
        alerts=alerts,
        replay_causes={"sigkill": sum(1 for i in pool.history if i.ending == "sigkill"),
                       "unclean_exit": pool.unclean_exits(),
                       "replay_event": pool.replay_events()},
        input_mismatches=_mismatches(production.records, inputs),
        swaps_from_ts=swaps_from_ts,
        model_versions=frozenset(swapper.versions) if swapper else frozenset(),
    )
    judgement = judge(evidence, reference, traffic.truth, grace_ms=GRACE_READINGS * traffic.interval_ms)
    return {**judgement.as_json(), "committed": committed,
            "input_records": sum(len(records) for records in inputs.values())}


def _mismatches(produced: list[ProducedRecord], inputs: dict[int, list[Any]]) -> int:
    """Produced positions the input topic does not hold (a broker that lost an acknowledged write)."""
    held = {(p, r.offset) for p, records in inputs.items() for r in records}
    return sum(1 for r in produced if (r.partition, r.offset) not in held)
