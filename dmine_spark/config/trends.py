"""The ``trends`` section: entities per text, sentiment per entity over time windows, and alert rules."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dmine_spark.config.errors import Strict

__all__ = [
    "EntitiesConfig",
    "AlertRuleConfig",
    "WebhookConfig",
    "TrendsConfig",
    "interval_seconds",
]

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_INTERVAL = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)


def interval_seconds(text: str, key: str = "trends.window") -> int:
    """Seconds in an interval written as Spark's ``window()`` takes it: ``1 hour``, ``30 minutes``, ``1 day``.

    Raises
    ------
    ValueError
        When ``text`` is not ``<whole number> <second|minute|hour|day|week>[s]`` or is zero.
    """
    m = _INTERVAL.match(str(text))
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{key}: {text!r} is not an interval such as '1 hour', '30 minutes' or '1 day'")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


class EntitiesConfig(Strict):
    """Which entities a text mentions: its cashtags and a dictionary of names and aliases."""

    cashtags: bool = True
    """Each cashtag (``$AAPL``, ``$BRK.B``) is an entity, by its upper-cased symbol."""
    dictionary: str | None = None
    """A CSV file (header ``entity,name``; one row per name or alias) or a catalog table with those columns.
    Names match whole words, case- and width-insensitively; Chinese names match as substrings."""


class AlertRuleConfig(Strict):
    """One alert rule: a class's share against the entity's rolling baseline, or a volume spike."""

    kind: Literal["share", "volume"] = "share"
    """``share``: the share of ``label`` in a window against the entity's baseline; ``volume``: the number of
    texts against the baseline's mean."""
    label: str | None = None
    """``share``: the class watched (default: ``trends.label``)."""
    method: Literal["zscore", "cusum"] = "zscore"
    """``share``: a two-proportion z-score per window, or a one-sided CUSUM of those z-scores (Page 1954)."""
    threshold: float | None = Field(default=None, gt=0.0)
    """The score that alerts: z-score 3.5, CUSUM decision interval 5, volume Poisson z-score 5 by default."""
    drift: float = Field(default=0.5, ge=0.0)
    """``cusum``: the allowance subtracted from each window's z-score."""
    baseline_windows: int = Field(default=14, ge=2)
    """Windows before the current one whose calm rows form the baseline."""
    min_volume: int | None = Field(default=None, ge=1)
    """Texts a window needs to alert (default 10 for ``share``, 20 for ``volume``)."""
    min_baseline_volume: int = Field(default=30, ge=1)
    """``share``: texts the baseline windows need together."""
    cooldown_windows: int = Field(default=3, ge=0)
    """Windows after an alert in which the same rule stays silent for that entity."""

    @model_validator(mode="after")
    def _kind_keys(self) -> AlertRuleConfig:
        if self.kind == "volume" and (self.label is not None or self.method != "zscore"):
            raise ValueError("a volume rule counts texts: label and method belong to share rules")
        return self


class WebhookConfig(Strict):
    """An HTTP endpoint each new alert is POSTed to as JSON."""

    url: str
    """``http://`` or ``https://`` URL."""
    timeout_seconds: float = Field(default=5.0, gt=0.0)
    """Per attempt."""
    retries: int = Field(default=3, ge=0)
    """Attempts after the first, on a connection error, a timeout or an HTTP 5xx/429 answer."""
    backoff_seconds: float = Field(default=1.0, ge=0.0)
    """Wait before the first retry; doubled before each next one."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (``Authorization``...)."""

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v


def _default_rules() -> list[AlertRuleConfig]:
    return [
        AlertRuleConfig(kind="share", method="zscore"),
        AlertRuleConfig(kind="share", method="cusum"),
        AlertRuleConfig(kind="volume"),
    ]


class TrendsConfig(Strict):
    """Sentiment over time per entity, and alerts when it shifts: ``entities_``, ``sentiment_ts_``, ``alerts_``."""

    enabled: bool = False
    """Run the trends stage (and update the trends as ``dmine score`` and ``dmine stream`` score new rows)."""
    split: str | None = None
    """The split whose predictions are monitored in ``dmine run`` (default: ``classify.eval_split``)."""
    time_col: str | None = None
    """The event time of each text: a timestamp column of the text sources, or epoch seconds as a number.
    Unset: ``dmine stream`` takes each row's arrival time; ``dmine run`` needs it."""
    window: str = "1 day"
    """The time window of ``sentiment_ts_<task>`` and of the alert rules (``1 hour``, ``1 day``...)."""
    watermark: str = "1 day"
    """``dmine stream``: how late a row may arrive; a window closes (and its alerts are decided) once the
    latest event time seen is this far past its end. A row whose window has closed is late: counted, not used."""
    label: str = "negative"
    """The class whose share the share rules watch by default."""
    entities: EntitiesConfig = Field(default_factory=EntitiesConfig)
    """How entities are found in texts."""
    rules: list[AlertRuleConfig] = Field(default_factory=_default_rules)
    """The alert rules (default: a share z-score and a share CUSUM on ``label``, and a volume spike; chosen on the
    financial replay, see docs/trends.md)."""
    examples: int = Field(default=3, ge=0, le=20)
    """Example texts kept with each alert: the window's texts of the watched class, most confident first."""
    webhook: WebhookConfig | None = None
    """POST each new alert here (null: no webhook)."""
    log_alerts: bool = True
    """Write one log line per new alert."""

    @model_validator(mode="after")
    def _intervals(self) -> TrendsConfig:
        interval_seconds(self.window, "trends.window")
        interval_seconds(self.watermark, "trends.watermark")
        names = [_rule_name(r, self.label) for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"trends.rules: two rules are the same rule ({', '.join(names)})")
        return self

    def rule_label(self, rule: AlertRuleConfig) -> str | None:
        """The class a rule watches (None for a volume rule)."""
        return None if rule.kind == "volume" else (rule.label or self.label)


def _rule_name(rule: AlertRuleConfig, default_label: str) -> str:
    return "volume_spike" if rule.kind == "volume" else f"share_{rule.method}:{rule.label or default_label}"
