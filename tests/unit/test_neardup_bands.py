"""LSH banding for near-duplicates: the pure arithmetic, no JVM."""

from __future__ import annotations

import pytest

from dmine_spark.prepare.neardup import candidate_probability, choose_bands


def test_candidate_probability_is_the_banding_s_curve() -> None:
    assert candidate_probability(1.0, 5, 4) == 1.0
    assert candidate_probability(0.0, 5, 4) == 0.0
    assert candidate_probability(0.5, 1, 1) == 0.5
    assert candidate_probability(0.8, 2, 2) == pytest.approx(1 - (1 - 0.64) ** 2)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9, 0.95])
def test_choose_bands_reaches_the_recall_within_the_budget(threshold: float) -> None:
    b, r = choose_bands(threshold, recall=0.99, max_hashes=128)
    assert b * r <= 128
    assert candidate_probability(threshold, b, r) >= 0.99
    # one more row per band would need more hashes than the budget for the same recall
    b2 = 1
    while candidate_probability(threshold, b2, r + 1) < 0.99:
        b2 += 1
    assert b2 * (r + 1) > 128
    # far below the threshold, few pairs become candidates
    assert candidate_probability(threshold / 3, b, r) < 0.2


def test_choose_bands_rejects_a_bad_threshold() -> None:
    with pytest.raises(ValueError, match="threshold must be in"):
        choose_bands(0.0)
    with pytest.raises(ValueError, match="threshold must be in"):
        choose_bands(1.5)
    assert choose_bands(0.7) == (11, 4)
    assert choose_bands(0.8) == (10, 6)
    assert choose_bands(0.7, recall=0.99, max_hashes=128) == (17, 4)
