"""``dmine bench neardup``'s precision and recall against the generator's injected copies (no JVM)."""

from __future__ import annotations

import pytest

from dmine_spark.tools.bench_neardup import neardup_scores


def test_scores_count_copies_removed_into_their_source_group() -> None:
    faults = {
        "r01": None,
        "r02": None,
        "r03": "near_dup:typo",  # copy of r01: found
        "r04": "near_dup:case",  # copy of r01, exact once normalised: the exact step's, left out of recall
        "r05": "near_dup:drop_word",  # copy of r02: missed
        "r06": "dup",  # exact copy of r02
        "r07": "pii:email",  # removed by the near step, not injected: a precision error
        "r08": "near_dup:punct",  # copy of r02, removed but into another group: counts against both
        "r09": "near_dup:swap_words",  # copy of r03, found through r03's group (kept r01)
        "r10": None,
    }
    dup_of = {"r03": "r01", "r04": "r01", "r05": "r02", "r06": "r02", "r08": "r02", "r09": "r03"}
    exact = {"r04": "r01", "r06": "r02"}
    near = {"r03": "r01", "r07": "r01", "r08": "r10", "r09": "r01"}
    s = neardup_scores(faults, dup_of, exact, near)
    assert s["injected_near_dup"] == 5 and s["near_dup_exact"] == 1
    assert s["near_dup_found"] == 2  # r03 and r09 of r03, r05, r08, r09
    assert s["recall"] == pytest.approx(2 / 4)
    assert s["near_removed"] == 4 and s["near_removed_injected"] == 2  # r03, r09
    assert s["precision"] == pytest.approx(2 / 4)


def test_a_source_removed_as_a_near_duplicate_still_groups_its_copies() -> None:
    # r02 is itself a near-duplicate of r01; its copy r03 lands in r01's group: found
    faults = {"r01": None, "r02": None, "r03": "near_dup:typo"}
    s = neardup_scores(faults, {"r03": "r02"}, {}, {"r02": "r01", "r03": "r01"})
    assert s["recall"] == 1.0 and s["near_removed_injected"] == 1 and s["precision"] == 0.5


def test_nothing_to_divide_gives_none() -> None:
    s = neardup_scores({"r1": None}, {}, {}, {})
    assert s["precision"] is None and s["recall"] is None
