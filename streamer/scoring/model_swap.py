"""Putting another model in the running one's place between two batches.

A swap is prepared beside the running model, so no batch waits for more
than one small step of it:

1. :func:`~streamer.scoring.bundle_checks.load_checked` loads the bundle
   (safe mode: weights as plain arrays, the Keras file is never executed)
   and checks it, off the scorer. A bundle that fails is refused
   with a reason and the running model stays.
2. :class:`ModelSwap` declares the new predictor's fields in a transient
   scope of the slot table (``swap_*``, never snapshotted) and from then on
   the pipeline advances it with every reading the running model reads.
3. :meth:`ModelSwap.rebuild_next` rebuilds the new predictor's state of a
   few devices at a time from their ring buffers (the last
   ``buffers.window`` readings), between batches. A device that reads a
   reading before its turn is rebuilt from a ring that holds that reading
   too, so the order does not matter.
4. Once every device is rebuilt, :meth:`ModelSwap.switch` puts the new
   predictor's fields under the running model's names and the pipeline
   scores with it: alerts carry its version from the next batch on.

What is kept: every device's ring buffer, threshold state (the residual
statistics adapt to the new model's residuals as they do to any change),
alert episodes and operator adjustments. What is rebuilt: the forecaster's
normalisation, LSTM states and next forecast, from the ring buffer (so from
at most ``buffers.window`` readings, stored as float32).
"""

from __future__ import annotations

import numpy as np

from models.backends import LSTMBackend
from models.bundle import ModelBundle
from streamer.scoring.lstm import LSTMPredictor
from streamer.scoring.pipeline import ScoringPipeline, rebuild_from_rings

# Scope of the fields of a model being prepared.
SWAP_SCOPE = "swap_"


class ModelSwap:
    """A model prepared beside the running one, then put in its place (see the module docstring).

    Every method runs on the scorer, between two batches.
    """

    def __init__(self, pipeline: ScoringPipeline, bundle: ModelBundle,
                 backend: LSTMBackend | None = None) -> None:
        """``backend``: built beforehand off the scorer (:func:`~streamer.scoring.lstm.build_backend`)."""
        if pipeline.staged is not None:
            raise RuntimeError("another model is already being swapped in")
        settings = pipeline.config.predictor.lstm
        self.pipeline = pipeline
        self.scope = pipeline.registry.table.scoped(SWAP_SCOPE, transient=True)
        self.predictor = LSTMPredictor(self.scope, bundle, mode=settings.mode, backend=settings.backend,
                                       prepared=backend)
        self.next_slot = 0
        pipeline.staged = self.predictor

    @property
    def version(self) -> str:
        """The version being swapped in."""
        return self.predictor.version

    def rebuild_next(self, slots: int) -> bool:
        """Rebuild the devices of the next ``slots`` slots; True once every slot in use is rebuilt."""
        registry = self.pipeline.registry
        start = self.next_slot
        stop = min(start + slots, registry.high_water)
        live = np.flatnonzero(registry.table["reg_live"][start:stop]) + start
        rebuild_from_rings(self.predictor, registry, live, self.pipeline.predictor)
        self.next_slot = stop
        return self.next_slot >= registry.high_water

    def switch(self) -> None:
        """Score with the new model from the next batch on; the old one's fields are freed."""
        pipeline = self.pipeline
        table = pipeline.registry.table
        old_fields = pipeline.predictor.state_fields
        table.adopt(self.scope)
        new_fields = set(self.predictor.state_fields)
        table.remove_fields([name for name in old_fields if name not in new_fields and name in table])
        pipeline.predictor = self.predictor
        pipeline.staged = None
        pipeline.know_version(self.predictor.version)

    def abandon(self) -> None:
        """Give up: the running model stays and the prepared fields are freed."""
        self.pipeline.staged = None
        self.scope.remove_fields(self.scope.fields)
