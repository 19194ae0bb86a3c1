"""The user's ways in, each in its own process: spark-submit.sh, dmine sql/tables, the notebook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PIPELINE_CONF, REPO

pytestmark = pytest.mark.slow

DMINE = [sys.executable, "-m", "dmine_spark.cli"]
SLICE = ["--set", "sources.train.sample=0.15", "--set", "sources.test.sample=0.1", "--set", "cluster.k=8"]


def _env(work_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DMINE_WORK_DIR"] = str(work_dir)
    env["PYTHON"] = sys.executable
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def submitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """The demo pipeline on a slice, submitted through ./spark-submit.sh to local[2]."""
    work = tmp_path_factory.mktemp("submit_work")
    env = _env(work)
    proc = _run(["./spark-submit.sh", "--master", "local[2]", "run", str(PIPELINE_CONF), "-q", *SLICE], env)
    return work, env, proc.stdout


def test_spark_submit_runs_every_stage(submitted) -> None:
    _, _, out = submitted
    for stage in ("ingest", "clean", "embed", "classify", "cluster"):
        assert f"  {stage} " in out
    assert "test accuracy" in out
    assert "rows: " in out and " clean + " in out


def test_sql_from_another_process_sees_results(submitted) -> None:
    work, env, _ = submitted
    got = _run([*DMINE, "sql", "SELECT count(*) AS n FROM dmine.pred_banking77", "--format", "json"], env).stdout
    n_pred = json.loads(got.strip().splitlines()[-1])["n"]
    runs = _run(
        [
            *DMINE,
            "sql",
            "SELECT counts['ingest.rows_out.test'] AS test_rows, status, master "
            "FROM (SELECT *, spark_master AS master FROM dmine.runs)",
            "--format",
            "json",
        ],
        env,
    ).stdout
    row = json.loads(runs.strip().splitlines()[-1])
    assert row["status"] == "ok" and row["master"] == "local[2]"
    assert n_pred == row["test_rows"] > 0
    table = _run([*DMINE, "sql", "SELECT count(*) FROM dmine.pred_banking77"], env).stdout
    assert table.splitlines()[-2].strip() == str(n_pred)


def test_sql_reads_a_runs_results_back_by_version(submitted) -> None:
    """spark-submit.sh starts Delta Lake from the jar cache; `dmine sql` time-travels to the version a run wrote."""
    from dmine_spark.spark import jars

    if not jars.have("delta"):
        if os.environ.get("CI"):
            pytest.fail("Delta Lake jars not cached; `dmine jars fetch delta` (bash dev.sh setup) fills the cache")
        pytest.skip("Delta Lake jars not cached")
    work, env, _ = submitted
    q = "SELECT run_id, table_versions['dmine.pred_banking77'] AS v FROM dmine.runs WHERE command = 'run'"
    row = json.loads(_run([*DMINE, "sql", q, "--format", "json"], env).stdout.strip().splitlines()[-1])
    assert row["v"] is not None
    back = _run(
        [
            *DMINE,
            "sql",
            f"SELECT DISTINCT run_id FROM dmine.pred_banking77 VERSION AS OF {row['v']}",
            "--format",
            "json",
        ],
        env,
    ).stdout
    assert [json.loads(x)["run_id"] for x in back.strip().splitlines()] == [row["run_id"]]
    hist = _run([*DMINE, "sql", "DESCRIBE HISTORY dmine.pred_banking77", "--format", "json"], env).stdout
    assert row["v"] in [json.loads(x)["version"] for x in hist.strip().splitlines()]


def test_tables_lists_every_layer(submitted) -> None:
    work, env, _ = submitted
    out = _run([*DMINE, "tables"], env).stdout
    for name in ("raw", "clean", "quarantine", "dup", "emb", "pred", "cluster", "cluster_terms"):
        assert f"dmine.{name}_banking77 " in out
    assert "dmine.runs " in out and "dmine.metrics " in out


def test_sql_errors_are_one_line(submitted) -> None:
    work, env, _ = submitted
    proc = subprocess.run(
        [*DMINE, "sql", "SELECT * FROM dmine.nope"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dmine: error:")]
    assert len(errors) == 1 and "TABLE_OR_VIEW_NOT_FOUND" in errors[0]


_SAME_ANSWER = [
    "SELECT count(*) FROM dmine.pred_banking77",
    # GROUP BY, avg of a CAST, a timestamp, ORDER BY and LIMIT
    "SELECT label, count(*) AS n, avg(CAST(label = prediction AS INT)) AS acc, max(scored_at) "
    "FROM dmine.pred_banking77 GROUP BY label ORDER BY n DESC, label LIMIT 7",
    # a map lookup, timestamps and a map column whole
    "SELECT run_id, counts['rows_in'], started_at, stage_seconds IS NOT NULL AS timed, labels "
    "FROM dmine.runs ORDER BY started_at",
    # a join of two tables
    "SELECT c.cluster, count(*) AS n, min(p.id) FROM dmine.pred_banking77 p "
    "JOIN dmine.cluster_banking77 c ON c.id = p.id GROUP BY c.cluster ORDER BY c.cluster",
]


# `dmine sql --engine spark` for every query and format, through the command's own code, in one process
# (one JVM for all of them: the session of the first call serves the others)
_SPARK_ANSWERS = """
import contextlib, io, json, sys
from dmine_spark.cli import main
out = {}
for query in json.loads(sys.argv[1]):
    for fmt in ("table", "json"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["sql", query, "--format", fmt, "--engine", "spark"]) == 0
        out[fmt + " " + query] = buf.getvalue()
print("ANSWERS " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def spark_answers(submitted) -> dict[str, str]:
    _, env, _ = submitted
    proc = _run([sys.executable, "-c", _SPARK_ANSWERS, json.dumps(_SAME_ANSWER)], env)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ANSWERS "))
    return json.loads(line[len("ANSWERS ") :])


@pytest.mark.parametrize("query", _SAME_ANSWER)
def test_sql_duckdb_answers_as_spark_does(submitted, spark_answers: dict[str, str], query: str) -> None:
    """The fast path prints byte for byte what Spark prints over the same tables."""
    _, env, _ = submitted
    for fmt in ("table", "json"):
        fast = _run([*DMINE, "sql", query, "--format", fmt, "--engine", "duckdb"], env).stdout
        assert fast == spark_answers[f"{fmt} {query}"]
        assert fast.strip()


def test_sql_view_falls_back_to_spark(submitted) -> None:
    """Views live in the metastore alone: auto asks Spark, and --engine duckdb says why it cannot."""
    _, env, _ = submitted
    q = "SELECT count(*) AS n FROM dmine.quarantine_banking77_train"
    proc = _run([*DMINE, "sql", q, "--format", "json", "-v"], env)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 0
    assert "answered by Spark (dmine.quarantine_banking77_train has no table folder" in proc.stderr
    fast = subprocess.run([*DMINE, "sql", q, "--engine", "duckdb"], cwd=REPO, env=env, capture_output=True, text=True)
    assert fast.returncode == 2
    assert fast.stderr.strip() == (
        "dmine: error: sql --engine duckdb: dmine.quarantine_banking77_train has no table folder "
        "(a view, or no such table); use --engine spark"
    )
    answered = _run([*DMINE, "sql", "SELECT count(*) FROM dmine.runs", "-v"], env)
    assert "answered by DuckDB" in answered.stderr


def test_sql_without_catalog_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*DMINE, "sql", "SELECT 1"], cwd=REPO, env=_env(tmp_path / "none"), capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"dmine: error: no dmine catalog in {tmp_path / 'none'}; run `dmine run <config>` first or pass --work-dir"
    )


def test_notebook_runs_and_ends_with_sql(tmp_path: Path) -> None:
    env = _env(tmp_path / "nb_work")
    env["DMINE_NOTEBOOK_SET"] = "sources.train.sample=0.1;sources.test.sample=0.1;cluster.k=6"
    out = _run([sys.executable, "notebooks/banking77_intents.py"], env).stdout
    assert re.search(r"classify  banking77-sk_logreg@v\d+: test accuracy", out)
    assert re.search(r"report: .*\.html", out)
    assert re.search(r"\|\s*metric\s*\|\s*value\s*\|\s*model_version\s*\|", out)
    assert re.search(r"\|\s*accuracy\s*\|\s*0\.\d+\s*\|", out) and re.search(r"\|\s*macro_f1\s*\|", out)
    assert "|rows_in|clean|quarantined|duplicates|embed_rows_per_s|" in out
    # the saved model scores new text through its own cleaner: the e-mail address comes back masked
    assert "how do I change my PIN? mail me at <EMAIL>" in out
