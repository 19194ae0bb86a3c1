"""The alert rules on simulated series: calm periods stay quiet, injected shifts fire, cool-downs hold; no JVM."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.mine.alerts import ShareRule, VolumeRule, share_alerts, volume_alerts


def _series(rng: np.random.Generator, windows: int, volume: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    totals = rng.poisson(volume, windows)
    return rng.binomial(totals, share), totals


def test_a_calm_series_gives_few_false_alerts() -> None:
    rng = np.random.default_rng(0)
    fired = 0
    for _ in range(200):  # 200 entities x 60 windows of a steady 20% negative share
        counts, totals = _series(rng, 60, 40, 0.2)
        fired += len(share_alerts(counts, totals, ShareRule()))
    assert fired / (200 * 60) < 0.005


@pytest.mark.parametrize("method", ["zscore", "cusum"])
def test_an_injected_shift_is_detected_within_two_windows(method: str) -> None:
    rng = np.random.default_rng(1)
    detected = 0
    for _ in range(100):
        counts, totals = _series(rng, 40, 40, 0.2)
        shifted = rng.binomial(totals[30:34], 0.6)  # the negative share jumps from 20% to 60% for 4 windows
        counts[30:34] = shifted
        hits = [a.window for a in share_alerts(counts, totals, ShareRule(method=method))]
        detected += any(30 <= w <= 31 for w in hits)
    assert detected >= 98


def test_cusum_adds_up_a_small_sustained_shift_that_zscores_miss() -> None:
    rng = np.random.default_rng(2)
    z_hits = c_hits = 0
    for _ in range(100):
        counts, totals = _series(rng, 50, 40, 0.2)
        counts[30:40] = rng.binomial(totals[30:40], 0.3)  # a modest rise held for 10 windows
        z_hits += any(30 <= a.window < 40 for a in share_alerts(counts, totals, ShareRule(method="zscore")))
        c_hits += any(30 <= a.window < 40 for a in share_alerts(counts, totals, ShareRule(method="cusum")))
    assert c_hits > z_hits


def test_cooldown_keeps_one_episode_to_one_alert() -> None:
    totals = np.full(30, 50)
    counts = np.full(30, 10)
    counts[20:23] = 40
    alerts = share_alerts(counts, totals, ShareRule(cooldown_windows=3))
    assert [a.window for a in alerts] == [20]
    assert alerts[0].observed == pytest.approx(0.8) and alerts[0].baseline == pytest.approx(
        141 / 702
    )  # 14 windows of 10 in 50, add-one smoothed


def test_small_windows_and_thin_baselines_never_alert() -> None:
    counts, totals = np.array([0, 0, 5]), np.array([3, 3, 5])  # 100% negative, but 5 texts after 6
    assert share_alerts(counts, totals, ShareRule()) == []


def test_a_volume_spike_fires_and_a_steady_volume_does_not() -> None:
    rng = np.random.default_rng(3)
    totals = rng.poisson(30, 40)
    assert volume_alerts(totals, VolumeRule()) == []
    totals[35] = 120
    alerts = volume_alerts(totals, VolumeRule())
    assert [a.window for a in alerts] == [35] and alerts[0].score > 5


def test_bad_series_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="between 0 and its total"):
        share_alerts([5], [3], ShareRule())
    with pytest.raises(ValueError, match="one length"):
        share_alerts([1, 2], [3], ShareRule())
