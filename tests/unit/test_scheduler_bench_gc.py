"""The scheduler bench's garbage-collector figures: the clock counts collections, the
ablation's threshold is restored."""

from __future__ import annotations

import gc

from orchestra_kit.scheduler.bench import GcClock, young_gc_threshold


def test_gc_clock_counts_collections_only_while_installed() -> None:
    clock = GcClock()
    with clock.installed():
        gc.collect()
    seen = clock.collections
    assert seen >= 1 and clock.seconds > 0
    gc.collect()
    assert clock.collections == seen and clock not in gc.callbacks


def test_young_threshold_is_restored() -> None:
    before = gc.get_threshold()
    with young_gc_threshold(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before
