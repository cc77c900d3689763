"""The seeded fault schedule of a chaos run."""

from __future__ import annotations

from collections import Counter

import pytest

from streamer.lab.chaos.plan import LEAD_FRACTION, TAIL_FRACTION, ChaosPlan, schedule


@pytest.mark.parametrize("plan", [ChaosPlan(), ChaosPlan(kills=6, bursts=2, terms=3, outages=4,
                                                           outage_s=(2.0, 10.0), duration_s=300.0, seed=3)])
def test_the_schedule_has_every_planned_fault_inside_the_production_window(plan: ChaosPlan) -> None:
    faults = schedule(plan)
    assert Counter(f.kind for f in faults) == Counter(
        {k: n for k, n in {"kill": plan.kills, "burst": plan.bursts, "term": plan.terms,
                           "outage": plan.outages}.items() if n})
    times = [f.at_s for f in faults]
    assert times == sorted(times)
    assert times[0] >= plan.duration_s * LEAD_FRACTION
    assert times[-1] <= plan.duration_s * (1 - TAIL_FRACTION)
    lengths = sorted(f.duration_s for f in faults if f.kind == "outage")
    assert (lengths[0], lengths[-1]) == plan.outage_s
    assert schedule(plan) == faults
    assert schedule(plan.replace(seed=plan.seed + 1)) != faults
