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


def test_serve_gc_sets_what_orchestra_serve_sets_and_restores() -> None:
    from orchestra_kit.config import ServerSettings
    from orchestra_kit.scheduler.bench import serve_gc
    before = gc.get_threshold()
    with serve_gc(True):
        assert gc.get_threshold()[0] == ServerSettings().gc_young_threshold != before[0]
    assert gc.get_threshold() == before
    with serve_gc(False):
        assert gc.get_threshold() == before


def test_frozen_gives_the_heap_back() -> None:
    from orchestra_kit.scheduler.bench import _frozen
    assert gc.get_freeze_count() == 0
    with _frozen(True):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with _frozen(False):
        assert gc.get_freeze_count() == 0
