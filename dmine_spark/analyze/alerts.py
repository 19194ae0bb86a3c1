"""Publishing alerts: ``alerts_<task>`` first, exactly once per alert id, then the sinks (a webhook, a log line).

An alert row is written before any sink sees it, and a sink that fails (an
endpoint down past its retries, a timeout) is counted and said in one line:
it never loses or blocks the row. Only alerts the table did not hold yet go
to the sinks, so a replayed micro-batch or a re-run does not notify twice.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dmine_spark.config import Layer, PipelineConfig, WebhookConfig
from dmine_spark.io.tables import merge_new_keys
from dmine_spark.mine.trends import new_alerts

__all__ = ["Published", "post_webhook", "alert_line", "publish"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class Published:
    """What publishing did: alerts offered, new ones written, and the webhook's deliveries."""

    offered: int
    new: int
    delivered: int = 0
    failed: int = 0
    rows: list[dict[str, Any]] | None = None


def post_webhook(hook: WebhookConfig, payload: dict[str, Any], *, sleep: Callable[[float], None] = time.sleep) -> str:
    """POST ``payload`` as JSON to ``hook.url``; retry on a connection error, a timeout, 408/425/429 and 5xx.

    Returns
    -------
    str
        ``""`` when the endpoint answered 2xx, else the last error in one line.
    """
    body = json.dumps(payload, default=str).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "dmine_spark", **hook.headers}
    wait, last = hook.backoff_seconds, ""
    for attempt in range(hook.retries + 1):
        if attempt:
            sleep(wait)
            wait *= 2
        req = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=hook.timeout_seconds) as resp:
                resp.read()
                return ""
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code not in _RETRY_STATUS:
                return last
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"{type(reason).__name__}: {reason}"
    return f"{last} (after {hook.retries + 1} attempts)"


def alert_line(a: dict[str, Any]) -> str:
    """One log line for an alert."""
    what = (
        f"{a['label']} share {a['observed']:.2f} vs {a['baseline']:.2f}"
        if a.get("label")
        else (f"volume {a['observed']:.0f} vs {a['baseline']:.1f}")
    )
    return (
        f"alert {a['alert_id']}: {a['entity']} {a['window_start']:%Y-%m-%d %H:%M} {a['rule']}: {what}, "
        f"score {a['score']:.2f}, {a['volume']} texts"
    )


def publish(
    cfg: PipelineConfig,
    alerts: DataFrame,
    *,
    run_id: str,
    stage: str,
    echo: Callable[[str], None] | None = None,
) -> Published:
    """Write the alerts ``alerts_<task>`` lacks, then send those to the sinks.

    Parameters
    ----------
    alerts : DataFrame
        :func:`~dmine_spark.mine.trends.with_examples` rows.
    stage : str
        ``trends`` (``dmine run``), ``score`` or ``stream``: recorded with each new alert.

    Returns
    -------
    Published
    """
    table = cfg.table(Layer.ALERTS)
    t = cfg.trends
    alerts = alerts.persist(StorageLevel.MEMORY_AND_DISK)  # counted, then filtered: the rules run once
    stamped = alerts.select(
        "*", F.lit(run_id).alias("run_id"), F.lit(stage).alias("stage"), F.current_timestamp().alias("created_at")
    )
    fresh = new_alerts(stamped, table).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        offered = alerts.count()
        rows = [r.asDict(recursive=True) for r in fresh.orderBy("window_start", "entity", "rule").collect()]
        if rows or not alerts.sparkSession.catalog.tableExists(table):
            merge_new_keys(fresh, table, ["alert_id"])
    finally:
        fresh.unpersist()
        alerts.unpersist()
    out = Published(offered=offered, new=len(rows), rows=rows)
    say = echo or log.info
    for a in rows:
        if t.log_alerts:
            say(alert_line(a))
        if t.webhook is not None:
            err = post_webhook(t.webhook, {"task": cfg.task, **a})
            if err:
                out.failed += 1
                log.warning(
                    "alert %s: webhook %s failed: %s; the alert is in %s", a["alert_id"], t.webhook.url, err, table
                )
            else:
                out.delivered += 1
    return out
