"""The seed table's structure and claim logic, on small synthetic inputs (no measurement)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from orchestra_kit.errors import ConfigError, NotFoundError, ValidationError
from orchestra_kit.lab.seedtable import SIZES, _ablation_frame, _knees, measure_seed_table
from orchestra_kit.lab.seedtable_model import COLUMNS, SeedTable, judge, make_row, spread


def _table() -> SeedTable:
    rows = [
        make_row("llm_post", "1 client", [600.0, 640.0], [3.0, 5.0]),
        make_row("llm_done", "1 client", [600.0, 640.0], [610.0, 630.0]),
        make_row("db", "16 concurrent", [80.0, 100.0], [10.0, 30.0]),
        make_row("employees", "10 concurrent", [100.0, 100.0], [100.0, 100.0]),
        make_row("employees", "100 concurrent", [90.0, 92.0], [100.0, 100.0]),
        make_row("assign", "15 concurrent", [85.0, 87.0], [100.0, 100.0]),
        make_row("users", "mixed workload", [10.0, 10.0], [200.0, 100.0]),
    ]
    ablation = _ablation_frame(pd.DataFrame({
        "variant": ["all_on", "all_on", "all_off", "all_off"], "repeat": [0, 1, 0, 1],
        "p95_ms": [10.0, 12.0, 30.0, 33.0], "p99_ms": [20.0, 22.0, 40.0, 44.0],
        "throughput_rps": [100.0, 100.0, 50.0, 60.0], "success_rate": [1.0, 1.0, 1.0, 0.9]}))
    return SeedTable.from_rows(rows, ablation=ablation, meta={"size": "synthetic"})


def test_spread_is_mean_min_max_ignoring_nan() -> None:
    assert spread([1.0, 3.0, math.nan]) == (2.0, 1.0, 3.0)
    assert all(math.isnan(v) for v in spread([]))


@pytest.mark.parametrize(("key", "level", "before", "after", "holds"), [
    ("llm_post", "1 client", 2100.0, 500.0, True),      # 4.2x >= 3x
    ("llm_post", "1 client", 2100.0, 1000.0, False),    # 2.1x < 3x
    ("db", "8 concurrent", 100.0, 20.0, True),          # exactly 5x
    ("db", "8 concurrent", 100.0, 25.0, False),
    ("employees", "10 concurrent", 40.0, 100.0, True),  # before fails, after supports
    ("employees", "10 concurrent", 100.0, 100.0, False),  # before does not fail
    ("employees", "50 concurrent", 10.0, 80.0, False),  # after does not support 50
    ("employees", "100 concurrent", 10.0, 80.0, None),  # the seed claimed nothing at 100
    ("assign", "15 concurrent", 87.0, 99.0, True),      # 87 % or worse before
    ("assign", "15 concurrent", 88.0, 99.0, False),
    ("assign", "50 concurrent", 100.0, 95.0, True),     # only "after >= 95 %" claimed at 50
    ("users", "mixed workload", 10.0, 100.0, True),
    ("users", "mixed workload", 20.0, 100.0, False),    # 5x only
    ("users", "mixed workload", 0.0, 50.0, False),      # under 100 users
])
def test_judge(key: str, level: str, before: float, after: float, holds: bool | None) -> None:
    got, note = judge(key, level, before, after)
    assert got is holds
    assert note


def test_table_structure_and_dtypes() -> None:
    t = _table().table
    assert tuple(t.columns) == COLUMNS
    assert str(t["claim_holds"].dtype) == "boolean"
    post = t.iloc[0]
    assert (post["before"], post["before_lo"], post["before_hi"]) == (620.0, 600.0, 640.0)
    assert post["improvement"] == pytest.approx(155.0)
    assert bool(post["claim_holds"]) is True
    assert bool(t.iloc[1]["claim_holds"]) is False  # the LLM call itself is not faster
    emp = t[t["row"] == "Concurrent employee creation"]
    assert emp["improvement"].tolist() == pytest.approx([1.0, 100.0 / 91.0])
    assert emp["claim_holds"].isna().tolist() == [False, True]


def test_markdown_and_verdicts_say_where_claims_fail() -> None:
    st = _table()
    md = st.to_markdown().splitlines()
    assert len(md) == 2 + len(st.table)
    assert "620 [600–640]" in md[2] and "**yes**" in md[2]
    verdicts = st.verdicts()
    assert len(verdicts) == len(st.table)
    assert "DOES NOT hold" in verdicts[1] and "DOES NOT hold" not in verdicts[0]
    assert "no claim" in verdicts[4]


def test_ablation_ratios_are_relative_to_all_on() -> None:
    ab = _table().ablation
    row = ab[(ab["variant"] == "all_off") & (ab["metric"] == "p95_ms")].iloc[0]
    assert row["ratio"] == pytest.approx(31.5 / 11.0)
    assert row["ratio_lo"] == pytest.approx(30.0 / 11.0)
    assert set(ab["metric"]) == {"p95_ms", "p99_ms", "throughput_rps", "success_rate"}


def test_knees_per_repeat() -> None:
    pts = pd.DataFrame({
        "variant": ["a"] * 4, "repeat": [0, 0, 1, 1], "load": [5.0, 20.0, 5.0, 20.0],
        "p95_ms": [50.0, 140.0, 50.0, 400.0], "success_rate": [1.0, 1.0, 1.0, 1.0]})
    assert _knees(pts, "a") == [20.0, 5.0]


def test_save_load_round_trip_and_plots(tmp_path: Path) -> None:
    st = _table()
    st.save(tmp_path / "t")
    back = SeedTable.load(tmp_path / "t")
    pd.testing.assert_frame_equal(back.table, st.table, check_dtype=False)
    assert back.table["claim_holds"].isna().sum() == 1
    assert back.meta == {"size": "synthetic"}
    assert back.verdicts() == st.verdicts()
    figs = back.figures()
    assert set(figs) == {"seed-table-latency", "seed-table-success", "seed-table-users",
                         "seed-table-ablation"}
    bars = [p for p in figs["seed-table-success"].axes[0].patches]
    assert len(bars) == 2 * 3  # before + after for each success row
    with pytest.raises(ValidationError):
        st.plot("speed")
    written = back.save_charts(tmp_path / "img")
    assert sorted(p.name for p in written) == sorted(f"{n}.png" for n in figs)


def test_load_missing_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        SeedTable.load(tmp_path)
    assert SIZES["full"].repeats >= 3 and SIZES["smoke"].repeats == 2


async def test_measure_rejects_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size"):
        await measure_seed_table(size="huge", results_root=tmp_path)
    with pytest.raises(ConfigError, match="repeats"):
        await measure_seed_table(repeats=0, results_root=tmp_path)
