"""Python's cyclic garbage collector, tuned for a process that allocates per record.

aiokafka builds a ``ConsumerRecord`` per message and the decoder a few
objects per batch, so a consumer allocates hundreds of thousands of
container objects a second. With the interpreter's default thresholds
(a young-generation collection every 700 net allocations) the collector runs
hundreds of times a second, and the older generations, which hold every
module, function and class loaded at start-up, are rescanned again and
again. Profiling ``streamer bench e2e`` drains showed this to cost about a
quarter of a daemon's throughput.

Two standard remedies, both reversible:

- ``gc.freeze()`` after start-up moves everything allocated so far into a
  permanent generation the collector never scans (start-up objects live as
  long as the process anyway);
- a higher young-generation threshold (``runtime.gc_gen0_threshold``) runs
  the collector less often; cyclic garbage then waits longer to be freed,
  a few megabytes at most.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


def tune_collector(gen0_threshold: int | None) -> None:
    """Freeze what is allocated so far and raise the young-generation threshold.

    ``None`` leaves the thresholds at the interpreter's defaults (the freeze
    still applies).
    """
    gc.collect()
    gc.freeze()
    if gen0_threshold is not None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
    log.debug("garbage collector: %d objects frozen, thresholds %s",
              gc.get_freeze_count(), gc.get_threshold())


@contextlib.contextmanager
def tuned_collector(gen0_threshold: int | None) -> Iterator[None]:
    """:func:`tune_collector` for a block, then the previous thresholds and an unfrozen heap."""
    thresholds = gc.get_threshold()
    tune_collector(gen0_threshold)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
