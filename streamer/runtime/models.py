"""Following the bundle registry: swap to a new ``current``, score ``candidate`` in shadow.

The daemon reads the registry's pointer files every
``predictor.lstm.poll_interval_s`` rather than listening on a control topic:
the registry is where promotions and rollbacks happen, so it is the one
source of truth; every daemon of the group converges on it by itself, one
that was down reads it when it starts, and there is no topic to provision,
retain or secure. A read is two small files (cheap on a mounted volume).

The ``candidate`` (with ``predictor.lstm.shadow.enabled``) is loaded and
checked the same way and scored in shadow (:mod:`streamer.scoring.shadow`)
until the pointer changes or is cleared.

A new ``current`` is loaded and checked off the scorer, prepared beside the
running model a slice of devices at a time between batches, then switched
in between two batches (:mod:`streamer.scoring.model_swap`): no reading is
skipped or scored twice, because batches go on being scored, each by one
model. A version that fails is refused, logged and counted
(``streamer_model_refusals_total``) and not tried again until the pointer
names another version; the running model stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from models.backends import LSTMBackend
from models.bundle import ModelBundle
from models.registry import BundleRegistry, RegistryError
from streamer.config import Config
from streamer.metrics import Metrics
from streamer.scoring.bundle_checks import Refusal, load_checked
from streamer.scoring.lstm import build_backend
from streamer.scoring.model_swap import ModelSwap
from streamer.scoring.pipeline import ScoringPipeline
from streamer.scoring.shadow import ShadowScorer
from streamer.state.manager import StateManager
from streamer.vocabulary import ModelRole, PauseCause

log = logging.getLogger(__name__)

T = TypeVar("T")
# Devices whose forecaster state one job rebuilds, to start with; then sized
# to take about JOB_TARGET_S each, so a batch never waits long behind one.
FIRST_REBUILD_SLOTS = 256
JOB_TARGET_S = 0.02
MAX_REBUILD_SLOTS = 8_192


class ScoringGate(Protocol):
    """Holds the scorer between two batches (:meth:`CommitProtocol.between_batches`)."""

    def between_batches(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while device state is changed outside a batch."""


class JobRunner(Protocol):
    """Runs a job on the scorer (:meth:`Scorer.run_job`)."""

    def run_job(self, fn: Callable[[], T], job: PauseCause) -> asyncio.Future[T]:
        """Run ``fn`` on the scorer, timed as a pause."""


class ModelFollower:
    """Keeps the pipeline's model on the registry's ``current`` (see the module docstring)."""

    def __init__(self, registry: BundleRegistry, *, config: Config, pipeline: ScoringPipeline,
                 scorer: JobRunner, gate: ScoringGate, metrics: Metrics,
                 state: StateManager | None) -> None:
        self.registry = registry
        self.config = config
        self.pipeline = pipeline
        self.scorer = scorer
        self.gate = gate
        self.metrics = metrics
        self.state = state
        self.poll_interval_s = config.predictor.lstm.poll_interval_s
        self.channels = list(config.readings.channels)
        self.shadowing = config.predictor.lstm.shadow.enabled
        self._refused: dict[ModelRole, str] = {}  # the version each pointer named when it was refused

    async def run(self) -> None:
        """Check the registry every ``poll_interval_s`` until cancelled."""
        try:
            # Episodes restored open may have opened under any registered version: their
            # updates and resolves keep its alert id.
            versions = [info.version for info in await asyncio.to_thread(self.registry.versions)]
            await self._job(functools.partial(self._know, versions))
        except Exception:
            log.exception("listing the model registry failed")
        while True:
            try:
                await self.check()
            except Exception:
                # A registry that cannot be read now may be readable next time; the model stays.
                log.exception("following the model registry failed")
            await asyncio.sleep(self.poll_interval_s)

    async def check(self) -> None:
        """Swap to ``current`` if it names another version than the running one; follow ``candidate``."""
        wanted = await asyncio.to_thread(self.registry.pointer, "current")
        if wanted is None or wanted == self.pipeline.predictor.version:
            self._refused.pop("current", None)
        elif self._refused.get("current") != wanted:
            await self.swap_to(wanted)
        candidate = await asyncio.to_thread(self.registry.pointer, "candidate") if self.shadowing else None
        if candidate == self.pipeline.predictor.version:
            candidate = None  # just promoted: nothing to compare
        running = self.pipeline.shadow.version if self.pipeline.shadow is not None else None
        if candidate == running:
            self._refused.pop("candidate", None)
            return
        if running is not None:
            await self._job(self._stop_shadow)
            self.metrics.set_model("candidate", None)
            log.info("shadow scoring of %s stopped", running)
        if candidate is not None and self._refused.get("candidate") != candidate:
            await self.shadow(candidate)

    async def shadow(self, version: str) -> bool:
        """Load, check and start scoring ``version`` in shadow; False when it was refused."""
        loaded = await asyncio.to_thread(self._load, version)
        if isinstance(loaded, Refusal):
            self._refuse("candidate", version, loaded)
            return False
        backend = await asyncio.to_thread(self._backend, loaded)
        scorer = await self._job(lambda: self._start_shadow(loaded, backend))
        try:
            await self._rebuild_all(scorer.rebuild_next)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._job(self._stop_shadow)
            raise
        self.metrics.model_swaps.labels("candidate").inc()
        self.metrics.set_model("candidate", version)
        log.info("shadow scoring %s beside %s (devices: %.0f%%)", version, self.pipeline.predictor.version,
                 100 * self.config.predictor.lstm.shadow.fraction)
        return True

    async def _rebuild_all(self, rebuild_next: Callable[[int], bool]) -> None:
        """Call ``rebuild_next(slots)`` in jobs between batches until done, each about JOB_TARGET_S long."""
        size = FIRST_REBUILD_SLOTS
        done = False
        while not done:
            job_started = time.perf_counter()
            done = await self._job(functools.partial(rebuild_next, size))
            took = time.perf_counter() - job_started
            size = int(min(MAX_REBUILD_SLOTS, max(16, size * JOB_TARGET_S / max(took, 1e-4))))

    def _backend(self, bundle: ModelBundle) -> LSTMBackend:
        """The new model's compute backend, for the fleet as it is now (it grows with it later)."""
        settings = self.config.predictor.lstm
        table = self.pipeline.registry.table
        return build_backend(bundle, mode=settings.mode, backend=settings.backend, rows=table.capacity,
                             reserve=table.reserve)

    def _start_shadow(self, bundle: ModelBundle, backend: LSTMBackend) -> ShadowScorer:
        pipeline = self.pipeline
        scorer = ShadowScorer(self.config, pipeline.registry, bundle, lambda: pipeline.predictor, backend)
        self.pipeline.shadow = scorer
        return scorer

    def _stop_shadow(self) -> None:
        scorer = self.pipeline.shadow
        if scorer is not None:
            self.pipeline.shadow = None
            scorer.stop()

    async def swap_to(self, version: str) -> bool:
        """Load, check, prepare and switch to ``version``; False when it was refused."""
        started = time.monotonic()
        loaded = await asyncio.to_thread(self._load, version)
        if isinstance(loaded, Refusal):
            self._refuse("current", version, loaded)
            return False
        log.info("model swap: preparing %s beside %s (%d devices)", version, self.pipeline.predictor.version,
                 len(self.pipeline.registry))
        backend = await asyncio.to_thread(self._backend, loaded)
        swap = await self._job(lambda: ModelSwap(self.pipeline, loaded, backend))
        try:
            await self._rebuild_all(swap.rebuild_next)
            previous = self.pipeline.predictor.version
            await self._job(lambda: self._switch(swap))
        except BaseException:
            with contextlib.suppress(Exception):
                await self._job(swap.abandon)
            raise
        self.metrics.model_swaps.labels("current").inc()
        self.metrics.model_swap_seconds.observe(time.monotonic() - started)
        self.metrics.set_build(predictor=self.config.predictor.kind, model_version=version,
                               method=self.pipeline.threshold.method)
        log.info("model swapped: %s -> %s in %.2fs", previous, version, time.monotonic() - started)
        return True

    def _know(self, versions: list[str]) -> None:
        for version in versions:
            self.pipeline.know_version(version)

    def _load(self, version: str) -> ModelBundle | Refusal:
        try:
            path = self.registry.path_of(version)
        except RegistryError as exc:
            return Refusal("unreadable", str(exc))
        loaded = load_checked(path, self.channels)
        if not isinstance(loaded, Refusal) and loaded.version != version:
            return Refusal("unreadable", f"versions/{version} holds {loaded.version!r}")
        return loaded

    def _switch(self, swap: ModelSwap) -> None:
        """On the scorer: the new model scores from the next batch; snapshots take its layout."""
        swap.switch()
        if self.state is not None:
            self.state.model_changed()

    def _refuse(self, role: ModelRole, version: str, refusal: Refusal) -> None:
        self._refused[role] = version
        self.metrics.model_refusals.labels(role, refusal.reason).inc()
        log.error("model %s %s refused (%s): %s; keeping %s", role, version, refusal.reason, refusal.detail,
                  self.pipeline.predictor.version)

    async def _job(self, fn: Callable[[], T]) -> T:
        async with self.gate.between_batches():
            return await self.scorer.run_job(fn, "model")
