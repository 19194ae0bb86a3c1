"""Alert rules over one entity's time series: a class's share against its own rolling baseline, and volume spikes.

Pure numpy, no Spark: the sentiment-over-time wiring groups the windows of
each entity and applies these rules to its series (one row per window, in
time order). Every rule compares a window with the entity's own recent past,
so a company that is always discussed negatively does not alert, and one
that suddenly is does.

* :class:`ShareRule` with ``method="zscore"``: the window's share of a class
  against the share over the previous ``baseline_windows`` windows, as a
  binomial z-score (the standard error of a proportion of ``n`` texts).
* :class:`ShareRule` with ``method="cusum"``: the one-sided CUSUM of the same
  standardised shifts (Page 1954, "Continuous inspection schemes",
  Biometrika 41), which adds up small sustained shifts that no single window
  shows.
* :class:`VolumeRule`: the window's volume against the previous windows'
  mean, as a Poisson z-score.

A window alerts only with enough texts (``min_volume``) and enough baseline
(``min_baseline_volume``); after an alert the rule is silent for
``cooldown_windows`` windows, and alerting windows do not enter the
baseline, so an episode is measured against the calm before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = ["ShareRule", "VolumeRule", "Alert", "share_alerts", "volume_alerts", "detect_series"]


@dataclass(frozen=True)
class ShareRule:
    """A shift of one class's share (e.g. ``negative``) above the entity's rolling baseline."""

    label: str = "negative"
    method: Literal["zscore", "cusum"] = "zscore"
    baseline_windows: int = 14
    """Windows before the current one that form the baseline share."""
    threshold: float | None = None
    """``zscore``: the z-score that alerts (default 3.5); ``cusum``: the decision interval ``h`` in standard
    errors (default 5, with ``drift`` 0.5: about 465 calm windows between false alarms for normal shifts,
    Montgomery, "Introduction to Statistical Quality Control", table 9.3)."""
    drift: float = 0.5
    """``cusum``: the allowance ``k`` subtracted from each standardised shift (in standard errors)."""
    min_volume: int = 10
    """Texts a window needs to alert."""
    min_baseline_volume: int = 30
    """Texts the baseline windows need together."""
    cooldown_windows: int = 3
    """Windows after an alert in which the rule stays silent."""

    @property
    def name(self) -> str:
        return f"share_{self.method}:{self.label}"

    @property
    def h(self) -> float:
        """The threshold in use: ``threshold``, else 3.5 (z-score) or 5.0 (CUSUM)."""
        if self.threshold is not None:
            return self.threshold
        return 5.0 if self.method == "cusum" else 3.5


@dataclass(frozen=True)
class VolumeRule:
    """A spike of the entity's volume above the mean of its previous windows."""

    baseline_windows: int = 14
    threshold: float = 5.0
    """The Poisson z-score ``(n - mean) / sqrt(mean)`` that alerts."""
    min_volume: int = 20
    cooldown_windows: int = 3

    @property
    def name(self) -> str:
        return "volume_spike"


@dataclass(frozen=True)
class Alert:
    """One alert: the window's position in the series, the rule, what was seen, the baseline and the score."""

    window: int
    rule: str
    observed: float
    baseline: float
    score: float


def _check(counts: np.ndarray, totals: np.ndarray) -> None:
    if counts.shape != totals.shape or counts.ndim != 1:
        raise ValueError(f"counts and totals must be 1-d of one length, got {counts.shape} and {totals.shape}")
    if np.any(counts < 0) or np.any(counts > totals):
        raise ValueError("each window's count must be between 0 and its total")


def share_alerts(counts: Sequence[int], totals: Sequence[int], rule: ShareRule) -> list[Alert]:
    """The windows where ``rule`` fires on the share ``counts / totals``.

    Parameters
    ----------
    counts : sequence of int, length T
        Texts of ``rule.label`` in each window, oldest first.
    totals : sequence of int, length T
        All texts of the entity in each window (0 for a window without any).
    rule : ShareRule

    Returns
    -------
    list of Alert
        ``observed`` is the window's share, ``baseline`` the baseline share
        (add-one smoothed: ``(c + 1) / (n + 2)``), ``score`` the z-score or
        the CUSUM statistic.

    Raises
    ------
    ValueError
        When the arrays differ in shape or a count is outside ``[0, total]``.
    """
    c = np.asarray(counts, dtype=np.float64)
    n = np.asarray(totals, dtype=np.float64)
    _check(c, n)
    out: list[Alert] = []
    calm = np.ones(len(c), dtype=bool)  # windows that may enter a baseline
    silent_until = -1
    s = 0.0
    for t in range(len(c)):
        lo = max(0, t - rule.baseline_windows)
        use = calm[lo:t]
        c0, n0 = float(c[lo:t][use].sum()), float(n[lo:t][use].sum())
        if n0 < rule.min_baseline_volume or n[t] < rule.min_volume:
            continue
        p0 = (c0 + 1.0) / (n0 + 2.0)
        p = c[t] / n[t]
        # two-proportion z: the baseline share is itself an estimate from n0 texts
        z = (p - p0) / math.sqrt(p0 * (1.0 - p0) * (1.0 / n[t] + 1.0 / n0))
        if rule.method == "cusum":
            s = max(0.0, s + z - rule.drift)
            score, fire = s, s > rule.h
        else:
            score, fire = z, z >= rule.h
        if fire:
            calm[t] = False
            if t > silent_until:
                out.append(Alert(t, rule.name, p, p0, score))
                silent_until = t + rule.cooldown_windows
            s = 0.0
    return out


def volume_alerts(totals: Sequence[int], rule: VolumeRule) -> list[Alert]:
    """The windows where the entity's volume spikes above the mean of its previous calm windows.

    Parameters
    ----------
    totals : sequence of int, length T
        Texts of the entity in each window, oldest first.
    rule : VolumeRule

    Returns
    -------
    list of Alert
        ``observed`` the window's volume, ``baseline`` the mean volume of the
        baseline windows, ``score`` the Poisson z-score.
    """
    n = np.asarray(totals, dtype=np.float64)
    if n.ndim != 1 or np.any(n < 0):
        raise ValueError("totals must be a 1-d sequence of counts")
    out: list[Alert] = []
    calm = np.ones(len(n), dtype=bool)
    silent_until = -1
    for t in range(len(n)):
        lo = max(0, t - rule.baseline_windows)
        base = n[lo:t][calm[lo:t]]
        if len(base) < max(2, rule.baseline_windows // 2) or n[t] < rule.min_volume:
            continue
        mean = max(float(base.mean()), 1.0)
        z = (n[t] - mean) / math.sqrt(mean)
        if z >= rule.threshold:
            calm[t] = False
            if t > silent_until:
                out.append(Alert(t, rule.name, float(n[t]), mean, z))
                silent_until = t + rule.cooldown_windows
    return out


_ALERT_COLUMNS = ["entity", "window_start", "rule", "label_pos", "observed", "baseline", "score", "volume"]


def detect_series(
    frame: pd.DataFrame, rules: Sequence[tuple[ShareRule | VolumeRule, int | None]], window_seconds: int
) -> pd.DataFrame:
    """The alerts of one entity's windows, every window from its first to its last (empty ones count as 0).

    Parameters
    ----------
    frame : pandas.DataFrame
        One entity's windows: ``entity``, ``window_start`` (timestamps on the window grid), ``volume`` and
        ``n0, n1, ...`` (texts of each class).
    rules : sequence of (rule, class position)
        A :class:`ShareRule` with the position of its class's ``n`` column, or a :class:`VolumeRule` with None.
    window_seconds : int
        The window length: the grid on which missing windows are filled in.

    Returns
    -------
    pandas.DataFrame
        ``entity, window_start, rule, label_pos, observed, baseline, score, volume``, one row per alert.
    """
    if frame.empty:
        return pd.DataFrame(columns=_ALERT_COLUMNS)
    entity = frame["entity"].iloc[0]
    f = frame.assign(window_start=pd.to_datetime(frame["window_start"])).groupby("window_start").sum(numeric_only=True)
    grid = pd.date_range(f.index.min(), f.index.max(), freq=pd.Timedelta(seconds=window_seconds))
    f = f.reindex(grid, fill_value=0)
    totals = f["volume"].to_numpy()
    rows = []
    for rule, pos in rules:
        if isinstance(rule, VolumeRule):
            found = volume_alerts(totals, rule)
        else:
            found = share_alerts(f[f"n{pos}"].to_numpy(), totals, rule)
        for a in found:
            rows.append((entity, grid[a.window], a.rule, pos, a.observed, a.baseline, a.score, int(totals[a.window])))
    return pd.DataFrame(rows, columns=_ALERT_COLUMNS)
