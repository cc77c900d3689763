"""What a chaos run does: its size (quick and full presets) and its seeded fault schedule."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["kill", "burst", "term", "outage", "swap"]

# Share of the production time before the first fault: every daemon has its
# partitions and its devices are past warm-up, so a kill hits a warm owner.
LEAD_FRACTION = 0.15
# Share of the production time after the last fault starts: the last restarted
# daemon is back, restored and scoring live traffic before the producer stops.
TAIL_FRACTION = 0.2


@dataclass(frozen=True)
class ChaosPlan:
    """The size of a chaos run and how many faults of each kind it injects."""

    daemons: int = 3
    devices: int = 60
    rate_hz: float = 5.0  # readings per second per device
    duration_s: float = 90.0  # production time; faults happen inside it
    partitions: int = 6
    kills: int = 2  # single SIGKILLs
    bursts: int = 0  # two daemons SIGKILLed at once (the OOM-killer case)
    terms: int = 1  # SIGTERMs mid-run (graceful drain under load)
    outages: int = 2  # broker pauses (SIGSTOP ... SIGCONT)
    # Model swaps: the registry's current alternates between two versions (promote, then
    # rollback), so every daemon swaps models under the other faults. 0: no registry.
    swaps: int = 0
    registry_poll_s: float = 0.5  # predictor.lstm.poll_interval_s of the daemons
    # Outage lengths are spread evenly over this range: the longest exceeds the
    # session timeout below, so the group coordinator may expire members.
    outage_s: tuple[float, float] = (3.0, 8.0)
    anomalies: int = 40
    hostile_every: int = 5  # one hostile record every this many steps
    snapshot_interval_s: float = 2.0
    session_timeout_ms: int = 6000
    restart_delay_s: float = 2.0  # an orchestrator's back-off before restarting a dead daemon
    start_timeout_s: float = 60.0  # every daemon ready before the producer starts
    drain_timeout_s: float = 120.0  # after the producer stops, for commits to cover everything
    seed: int = 7

    def replace(self, **changes: object) -> ChaosPlan:
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


QUICK = ChaosPlan()
FULL = ChaosPlan(daemons=4, devices=200, duration_s=300.0, partitions=12, kills=6, bursts=2, terms=3,
                 outages=4, outage_s=(2.0, 10.0), anomalies=150, drain_timeout_s=240.0)


@dataclass(frozen=True)
class Fault:
    """One fault, ``at_s`` seconds after the producer starts."""

    at_s: float
    kind: FaultKind
    duration_s: float = 0.0  # outages only


def schedule(plan: ChaosPlan) -> list[Fault]:
    """The faults of ``plan`` in time order: shuffled kinds, evenly spaced with jitter (seeded).

    >>> [f.kind for f in schedule(ChaosPlan(kills=1, terms=1, outages=0, seed=1))]
    ['term', 'kill']
    >>> schedule(ChaosPlan(kills=1, terms=0, outages=0, duration_s=100.0))[0].at_s  # mid 15..80 s
    47.5
    >>> sorted(f.kind for f in schedule(ChaosPlan(kills=1, terms=0, outages=0, swaps=2)))
    ['kill', 'swap', 'swap']
    """
    rng = random.Random(plan.seed)
    counts: dict[FaultKind, int] = {"kill": plan.kills, "burst": plan.bursts, "term": plan.terms,
                                    "outage": plan.outages, "swap": plan.swaps}
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    lo, hi = plan.outage_s
    lengths = [lo + (hi - lo) * i / max(1, plan.outages - 1) for i in range(plan.outages)]
    rng.shuffle(lengths)
    start = plan.duration_s * LEAD_FRACTION
    end = plan.duration_s * (1.0 - TAIL_FRACTION)
    spacing = (end - start) / len(kinds) if kinds else 0.0
    faults: list[Fault] = []
    for index, kind in enumerate(kinds):
        # The middle of its slot, moved by at most a quarter slot either way.
        jitter = 0.0 if len(kinds) == 1 else rng.uniform(-0.25, 0.25) * spacing
        at = round(start + spacing * (index + 0.5) + jitter, 2)
        faults.append(Fault(at, kind, round(lengths.pop(), 1) if kind == "outage" else 0.0))
    return faults
