"""``dmine bench small``: wall seconds of whole ``dmine`` commands on small inputs, JVM start included.

New users try a tool on a sample first, where fixed costs (a JVM, a
metastore, Delta commits, Python workers) are all of the time. Each case is
one ``dmine`` command in a fresh child process, timed from its start to its
exit, run ``repeat`` times (a fresh work directory each time for the
pipelines); the figures are the median and the range.

Cases, on BANKING77 rows from the shared datasets folder and the demo's
config (``conf/base/pipelines/banking77.yaml``, report and MLflow tracking on
as a user has them):

``pipeline_1k``
    ``dmine run --stages ingest,clean,embed,classify`` on 1,000 rows (800
    train, 200 test).
``ingest_clean_20``
    ``dmine run --stages ingest,clean`` on 20 rows (10 and 10).
``sql``
    ``dmine sql "SELECT count(*) FROM dmine.pred_banking77"`` on the catalog
    of the first ``pipeline_1k`` run.

Variants, in the same run: ``dmine`` (as installed: the driver's class-data
archive, :mod:`dmine_spark.spark.classcache`, and for ``sql`` the DuckDB fast
path), and the baselines ``no_archive`` (``DMINE_JVM_ARCHIVE=off``) and, for
``sql``, ``spark`` (``--engine spark``, with the archive) and
``spark_no_archive`` (both off: how ``dmine sql`` ran before either). The
ratio of a variant is the baseline's median over its own.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["CASES", "bench_small", "summary_lines"]

CASES = ("pipeline_1k", "ingest_clean_20", "sql")
_QUERY = "SELECT count(*) FROM dmine.pred_banking77"
_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "base" / "pipelines" / "banking77.yaml"


def _slice(src: Path, dest: Path, n: int) -> Path:
    """The first ``n`` rows of every 10th row of ``src`` (so several intents), as ``dest``."""
    with src.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    picked = (body[::10] + body)[:n]
    with dest.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *picked])
    return dest


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=_CONFIG.parents[3])
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        raise RuntimeError(f"bench small: `{' '.join(cmd[2:5])}` failed:\n{tail}")
    return seconds


def bench_small(
    datasets: Path,
    *,
    work_dir: Path,
    repeat: int = 3,
    cases: Sequence[str] = CASES,
    echo: Callable[[str], None] = print,
) -> dict:
    """Time each case of the module docstring ``repeat`` times per variant.

    Parameters
    ----------
    datasets : Path
        The shared datasets folder (its ``banking77/train.csv`` and ``test.csv``).
    work_dir : Path
        Inputs and the runs' work directories go under ``<work_dir>/bench_small``.
    repeat : int
        Runs per case and variant (the median is reported).
    cases : sequence of str
        A subset of :data:`CASES`; ``sql`` runs one ``pipeline_1k`` first when that case is not chosen.

    Returns
    -------
    dict
        ``{case: {variant: {"median_s", "min_s", "max_s", "runs_s"}}}`` and ``ratio``:
        ``{case: {variant: baseline median / variant median}}``.

    Raises
    ------
    ValueError
        An unknown case, or ``repeat`` below 1.
    FileNotFoundError
        Without the BANKING77 files or the demo config (a source checkout).
    RuntimeError
        When a timed command fails (its last lines are in the message).
    """
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"bench small: unknown case {unknown[0]!r}; known: {', '.join(CASES)}")
    if repeat < 1:
        raise ValueError("bench small: --repeat must be at least 1")
    for need in (datasets / "banking77" / "train.csv", datasets / "banking77" / "test.csv", _CONFIG):
        if not need.is_file():
            raise FileNotFoundError(f"bench small: {need} not found (the datasets folder, and a source checkout)")
    root = Path(work_dir).resolve() / "bench_small"
    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    b77 = datasets / "banking77"
    sizes = {"pipeline_1k": (800, 200), "ingest_clean_20": (10, 10)}
    stages = {"pipeline_1k": "ingest,clean,embed,classify", "ingest_clean_20": "ingest,clean"}
    py = [sys.executable, "-m", "dmine_spark.cli"]
    base_env = {k: v for k, v in os.environ.items() if k not in {"DMINE_JVM_ARCHIVE", "DMINE_WORK_DIR"}}
    env_of = {
        "dmine": base_env,
        "no_archive": {**base_env, "DMINE_JVM_ARCHIVE": "off"},
        "spark": base_env,
        "spark_no_archive": {**base_env, "DMINE_JVM_ARCHIVE": "off"},
    }

    def pipeline_cmd(case: str, wd: Path) -> list[str]:
        n_train, n_test = sizes[case]
        train = _slice(b77 / "train.csv", inputs / f"{case}_train.csv", n_train)
        test = _slice(b77 / "test.csv", inputs / f"{case}_test.csv", n_test)
        return [
            *py, "run", str(_CONFIG), "-q", "--stages", stages[case], "--work-dir", str(wd),
            "--set", f"sources.train.path={train}", "--set", f"sources.test.path={test}",
        ]  # fmt: skip

    out: dict = {"repeat": repeat}
    sql_catalog: Path | None = None
    for case in [c for c in CASES if c in cases]:
        variants = ("dmine", "spark", "spark_no_archive") if case == "sql" else ("dmine", "no_archive")
        if case == "sql" and sql_catalog is None:
            sql_catalog = root / "sql_catalog"
            echo("bench small: a 1,000-row pipeline run for the sql case's catalog")
            _timed(pipeline_cmd("pipeline_1k", sql_catalog), base_env)
        res: dict = {}
        for variant in variants:
            runs = []
            for i in range(repeat):
                if case == "sql":
                    engine = [] if variant == "dmine" else ["--engine", "spark"]
                    cmd = [*py, "sql", _QUERY, "--work-dir", str(sql_catalog), *engine]
                else:
                    wd = root / f"{case}-{variant}-{i}"
                    cmd = pipeline_cmd(case, wd)
                    if case == "pipeline_1k" and sql_catalog is None:
                        sql_catalog = wd
                runs.append(_timed(cmd, env_of[variant]))
                echo(f"bench small: {case} {variant} run {i + 1}/{repeat}: {runs[-1]:.1f}s")
            res[variant] = {
                "median_s": statistics.median(runs),
                "min_s": min(runs),
                "max_s": max(runs),
                "runs_s": runs,
            }
        out[case] = res
    out["ratio"] = {}
    for case in [c for c in CASES if c in out]:
        baseline = out[case]["spark_no_archive" if case == "sql" else "no_archive"]["median_s"]
        out["ratio"][case] = {v: baseline / r["median_s"] for v, r in out[case].items()}
    return out


def summary_lines(res: dict) -> list[str]:
    """The table ``dmine bench small`` prints: case, variant, median seconds, range, ratio to the baseline."""
    lines = [f"{'case':<16} {'variant':<17} {'median s':>9} {'range s':>13} {'ratio':>7}"]
    for case in CASES:
        for variant, r in res.get(case, {}).items():
            span = f"{r['min_s']:.1f}-{r['max_s']:.1f}"
            lines.append(
                f"{case:<16} {variant:<17} {r['median_s']:>9.1f} {span:>13} {res['ratio'][case][variant]:>6.2f}x"
            )
    return lines
